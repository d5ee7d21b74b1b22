# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. Self-supervision is rate reduction
#
# Tutorials 01-08 trained CRATE with labels. DINO (Caron et al., "Emerging
# Properties in Self-Supervised Vision Transformers") learns features with
# none: a *student* network sees several crops of an image, a *teacher* (a
# slowly moving average of the student) sees the two large ones, and the
# student is trained to predict the teacher's output from every other crop.
# SimDINO (Wu et al., "Simplifying DINO via Coding Rate Regularization")
# shows that the machinery DINO needs to make this work (a prototype layer,
# centering, sharpening) can be replaced by the one quantity this library is
# built on, the coding rate.
#
# By the end you will have
#
# 1. derived SimDINO's loss from the rate reduction objective and checked
#    `whitebox.losses.simdino_loss` against a direct computation;
# 2. trained a small CRATE on the 8 x 8 digits with it, and watched the
#    features collapse when the expansion term (the coding rate) is removed;
# 3. seen DINO's centering and sharpening do the same job by other means,
#    and measured how it fares at this scale;
# 4. measured why the coding rate needs float64 when eps is small, and how
#    `whitebox.rate` keeps a float32 run from going wrong.
#
# ## The objective
#
# Take $m$ images, two global crops each, and let $Z_v \in \mathbb{R}^{m \times p}$
# hold the L2-normalised features of crop $v$ (rows are images). Self-supervision
# wants two things at once:
#
# * **views of one image agree**: the features of crop $v$ of image $i$ are
#   close to those of its other crops. With unit rows, closeness is the cosine,
#   and summing the cosines over pairs of views is (minus) the coding rate of
#   each image's little cloud of views, to first order: aligning the views
#   *compresses* each image's set of features to a point;
# * **different images stay apart**: the whole batch must not shrink to a
#   point as well. That is the expansion term of tutorial 01, the coding rate
#   $R(Z) = \tfrac12 \log\det(I_p + \tfrac{p}{m\epsilon^2} Z^\top Z)$, large
#   when the rows spread over many directions.
#
# Maximising expansion minus compression is rate reduction with each image as
# its own class. SimDINO's loss is exactly this, with the teacher's output as
# the target of the alignment (a constant: no gradient flows into it):
#
# $$\mathcal{L} = -\,\text{coeff}\cdot\underbrace{\tfrac{1}{2n-2}\sum_{t\in\{0,1\}}
#   \sum_{s\ne t} \tfrac1m \sum_i \cos(T_{t,i}, S_{s,i})}_{\text{compression}}
#   \;-\; \underbrace{\gamma\,\tfrac12\sum_{v\in\{0,1\}} \tfrac12\log\det\big(I_p +
#   \tfrac{p}{m\,\varepsilon} Z_v^\top Z_v\big)}_{\text{expansion}},
#   \qquad \gamma = \tfrac{p+m}{pm},$$
#
# with $n$ crops, $S$ the student's and $T$ the teacher's features, and $Z_v$ the
# average of student and teacher on global crop $v$ (the official default).
# Their $\varepsilon$ is our $\epsilon^2$.

# %%
import math
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import rate
from whitebox.data.images import load_dataset
from whitebox.data.loader import channel_stats, normalize
from whitebox.data.multicrop import MultiCrop
from whitebox.functional import l2_normalize_backward, l2_normalize_forward
from whitebox.losses import DINOLoss, simdino_loss
from whitebox.models import CRATE
from whitebox.models.class_token_features import CRATEFeatures
from whitebox.nn import DINOHead
from whitebox.optim import AdamW
from whitebox.ssl import cosine_momentum

rng = np.random.default_rng(0)
t_start = time.time()

# %% [markdown]
# ## 1. The loss, term by term
#
# Write both terms directly (cosines by hand, the log-determinant by
# `np.linalg.slogdet` in float64) and compare with the library's loss.

# %%
m, p, n_crops, eps = 16, 8, 4, 0.2
student = rng.standard_normal((n_crops * m, p))
teacher = rng.standard_normal((2 * m, p))
unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
S, T = unit(student).reshape(n_crops, m, p), unit(teacher).reshape(2, m, p)
pairs = [(t, s) for t in range(2) for s in range(n_crops) if s != t]
compression = np.mean([np.mean((T[t] * S[s]).sum(-1)) for t, s in pairs])
Z = (student.reshape(n_crops, m, p)[:2] + teacher.reshape(2, m, p)) / 2
gamma = (p + m) / (p * m)
expansion = gamma * np.mean([0.5 * np.linalg.slogdet(np.eye(p) + p / (m * eps) * z.T @ z)[1]
                             for z in Z])
loss, dstudent, terms = simdino_loss(student, teacher, n_crops, eps=eps, terms=True)
check("compression term", terms["compression"], compression, tol=1e-12)
check("expansion term", terms["expansion"], expansion, tol=1e-12)
check("loss = -compression - expansion", loss, -compression - expansion, tol=1e-12)

# %% [markdown]
# The expansion term is `whitebox.rate`'s coding rate at $\epsilon = \sqrt{\varepsilon}$,
# gradient included: the loss adds nothing new to differentiate. Because the loss
# is linear in `coeff`, the gradient of the compression term alone is the
# difference of two calls, which we use below to *remove* the expansion term.

# %%
check("expansion is the coding rate", expansion,
      gamma * np.mean(rate.coding_rate(Z, math.sqrt(eps))), tol=1e-12)
_, d_expansion_only = simdino_loss(student, teacher, n_crops, eps=eps, coeff=0.0)
d_compression_only = dstudent - d_expansion_only          # gradient of -compression

# %% [markdown]
# ## 2. Training on the digits, with and without the expansion term
#
# To see the two terms at work without waiting for a network, take the
# smallest encoder there is: a linear map $W \in \mathbb{R}^{p\times 64}$ of a
# crop's 64 pixels, followed by L2 normalisation. Each step draws a batch of
# digits and two global crops of each (random resized crops with intensity
# jitter, `whitebox.data.multicrop.MultiCrop`); the teacher, an exponential
# moving average of $W$, reads them too. We follow the coding rate $R$ of the
# held-out digits' features (at the loss's $\varepsilon$) and their effective rank
# (the exponential of the entropy of the normalised singular values: $p$ for
# features spread evenly over $p$ directions, 1 for features on one line).

# %%
(train_x, _), (test_x, test_y) = load_dataset("digits", seed=0)
mean, std = channel_stats(train_x)
held_out = normalize(test_x, mean, std).reshape(len(test_x), -1)          # (297, 64)
crops = MultiCrop(8, 4, n_local=0, global_scale=(0.5, 1.0), flip=False)
STEPS = 150 if FAST else 600
BATCH, P, EPS, K = 64, 16, 0.2, 64


def effective_rank(Z):
    s = np.linalg.svd(Z, compute_uv=False)
    q = s / s.sum()
    return float(np.exp(-(q[q > 0] * np.log(q[q > 0])).sum()))


def train(kind, steps=STEPS, lr=2e-2, seed=0):
    """kind: 'simdino', 'no expansion' (SimDINO's compression term only) or 'dino'.
    Returns {'step', 'R', 'rank', 'loss'}: the held-out features every steps/10 steps."""
    gen = np.random.default_rng(seed)
    W = gen.standard_normal((P, 64)) / 8                    # the student
    W_teacher = W.copy()
    prototypes = unit(gen.standard_normal((K, P)))          # DINO's last layer, fixed here
    dW = np.zeros_like(W)
    opt = AdamW({"W": W}, lr=lr, weight_decay=0.0, grads={"W": dW})
    momentum = cosine_momentum(0.9, 1, steps)
    crit = DINOLoss(K, 2, 0.04, 0.04, 0, 1, dtype="float64") if kind == "dino" else None
    log = {"step": [], "R": [], "rank": [], "loss": []}
    for step in range(steps + 1):
        if step % max(1, steps // 10) == 0:
            Z = unit(held_out @ W.T)
            log["step"].append(step)
            log["R"].append(float(rate.coding_rate(Z, math.sqrt(EPS))))
            log["rank"].append(effective_rank(Z))
        if step == steps:
            break
        images = train_x[gen.choice(len(train_x), BATCH, replace=False)]
        X = np.concatenate([normalize(v, mean, std).reshape(BATCH, -1)
                            for v in crops(images, gen)])                # (2 m, 64)
        S, cache = l2_normalize_forward(X @ W.T)                           # (2 m, p)
        T = unit(X @ W_teacher.T)
        if kind == "dino":
            loss, dlogits = crit(S @ prototypes.T, T @ prototypes.T, 0)
            dS = dlogits @ prototypes
        else:
            loss, dS = simdino_loss(S, T, 2, eps=EPS)
            if kind == "no expansion":
                loss_e, dS_e = simdino_loss(S, T, 2, eps=EPS, coeff=0.0)
                loss, dS = loss - loss_e, dS - dS_e      # -compression and its gradient
        log["loss"].append(float(loss))
        dW[...] = l2_normalize_backward(dS, cache).T @ X                  # (p, 64)
        opt.step()                                                         # W in place
        mu = float(momentum[step])
        W_teacher = mu * W_teacher + (1 - mu) * W                          # the EMA
    return log


runs = {kind: train(kind) for kind in ("simdino", "no expansion")}
for kind, log in runs.items():
    print(f"{kind:>13}: R {log['R'][0]:.3f} -> {log['R'][-1]:.3f}, effective rank "
          f"{log['rank'][0]:.2f} -> {log['rank'][-1]:.2f} (of {P})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for kind, log in runs.items():
    axes[0].plot(log["step"], log["R"], "o-", label=kind)
    axes[1].plot(log["step"], log["rank"], "o-", label=kind)
axes[0].set(xlabel="step", ylabel="R (nats)", title="coding rate of held-out features")
axes[1].set(xlabel="step", ylabel="effective rank", title=f"effective rank (of {P})")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
save(fig, "10_collapse.png")

# %% [markdown]
# Without the expansion term the loss is minimised by mapping every image to
# the same point: all cosines are then 1. Nothing in the alignment term
# prevents it, and the teacher, an average of the student, follows it down.
# The coding rate is what keeps the features spread: its gradient
# $a Z (I + aZ^\top Z)^{-1}$ pushes hardest along the directions the features
# fill least.
#
# ## 3. DINO: centering and sharpening
#
# DINO has no coding rate. The head ends in $K$ prototypes, each output is a
# distribution over them, and the student's distribution (temperature
# $\tau_s = 0.1$) is trained towards the teacher's
# $q = \mathrm{softmax}((t - c)/\tau_t)$. Two devices keep it from collapsing:
#
# * **centering**: $c$ is a running mean of the teacher's outputs. Subtracting
#   it stops one prototype from winning for every image (a collapse to one
#   dimension), but alone it drives $q$ towards uniform;
# * **sharpening**: a small $\tau_t$ (0.04) makes $q$ peaked, which pushes the
#   other way, towards one prototype.
#
# The balance of the two plays the role of the expansion term. Below: the
# entropy of $q$ for teacher outputs that share one large common component,
# with and without each device.

# %%
common = 2.0 * rng.standard_normal(K)                   # what every image shares
t_out = common + 0.3 * rng.standard_normal((256, K))    # plus what is its own
softmax = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(
    x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
entropy = lambda q: float(-(q * np.log(q + 1e-30)).sum(-1).mean())
top_share = lambda q: float(np.bincount(q.argmax(-1), minlength=K).max() / len(q))
cases = {"raw (tau 1)": softmax(t_out), "sharpened (tau 0.04)": softmax(t_out / 0.04),
         "centred (tau 1)": softmax(t_out - t_out.mean(0)),
         "centred + sharpened": softmax((t_out - t_out.mean(0)) / 0.04)}
for name, q in cases.items():
    print(f"{name:>22}: entropy {entropy(q):.3f} (uniform {math.log(K):.3f}), "
          f"share of the most chosen prototype {top_share(q):.2f}")

# %% [markdown]
# Sharpening alone makes every image pick the same prototype (share 1.0: the
# one-dimensional collapse); centering alone leaves $q$ close to uniform
# (the other collapse); both together give peaked distributions that differ
# from image to image. The same linear encoder trained with DINO's loss
# (prototypes fixed, so only the encoder learns):

# %%
runs["dino"] = train("dino")
log = runs["dino"]
print(f"         dino: loss {log['loss'][0]:.3f} -> {log['loss'][-1]:.3f} (log K = "
      f"{math.log(K):.3f}), R {log['R'][0]:.3f} -> {log['R'][-1]:.3f}, effective rank "
      f"{log['rank'][0]:.2f} -> {log['rank'][-1]:.2f}")

# %% [markdown]
# DINO keeps the features off a single point, but their rate falls (from 10.3
# to about 6-7 nats here) where SimDINO's rises. With CRATE the balance is
# harder still to strike, and part of the reason is measurable:
# an untrained CRATE's class-token features (what the head reads) of different
# digits are nearly parallel, so the head's outputs start out collapsed and
# everything rests on centering and sharpening to pull them apart.

# %%
crate = CRATE(image_size=8, patch_size=2, num_classes=10, dim=64, depth=2, heads=2,
              dim_head=32, channels=1, dtype="float64", seed=0)
raw_feats = CRATEFeatures(crate)(normalize(test_x, mean, std).astype(np.float64))
mean_cos = lambda f: float(((unit(f) @ unit(f).T).sum() - len(f)) / (len(f) * (len(f) - 1)))
print(f"mean cosine between different digits' class-token features at init: "
      f"{mean_cos(raw_feats):.4f}")

# %% [markdown]
# What every image shares is the class token and its position (drawn at unit
# scale, as CRATE draws them); what differs, the attention's read of the
# patches, is a small part of each feature. DINO's head as the ViT runs it
# (three Linears with GELUs, then the L2-normalised bottleneck the prototypes
# read) passes that on: its bottleneck vectors of different digits are as
# parallel as its inputs. DINO has a variant for this, the batch normalisation
# its ResNet runs put after the head's hidden Linears (`use_bn_in_head`): it
# subtracts what the rows of the batch share and rescales what is left.

# %%
bottleneck_cos = {}
for use_bn in (False, True):
    head = DINOHead(64, 256, hidden_dim=256, bottleneck_dim=64, dtype="float64", seed=1,
                    use_bn=use_bn)
    bottleneck = head.mlp(raw_feats)          # training mode: the batch's statistics
    bottleneck_cos[use_bn] = mean_cos(bottleneck)
    print(f"head {'with' if use_bn else 'without'} batch norm: mean cosine between the "
          f"bottleneck vectors of different digits {bottleneck_cos[use_bn]:.4f}")

# %% [markdown]
# That is the difference between DINO collapsing and DINO learning here. In
# `python -m whitebox.train --task ssl --ssl-loss dino` (batch 64, 256
# prototypes) with the head of the ViT runs (`--head-bn off`) every setting
# we measured collapsed (10-epoch runs, seed 0; the 30-epoch default ends at
# a k-NN accuracy of 72.7%, below the untrained network's 75.1%): learning rates 1e-4 to 2e-3,
# teacher temperatures 0.004 to 0.04, 64 to 4096 prototypes, teacher momentum
# 0.9 to 0.999, batch 128 and 256, no local crops, 8 local crops, weaker
# augmentation, the class token and position table drawn at DINO's 0.02
# scale, no weight decay, DINO's frozen last layer in the first epoch, the
# gradient norm clipped at 3. The teacher's distributions end uniform
# (entropy log K for each image and for their mean; the loss sits at
# log 256 = 5.545) and the bottleneck vectors of different digits keep a mean
# cosine of 0.999 from the first epoch on; with the centre's momentum raised
# from 0.9 to 0.99 it is the other collapse (loss near 0, one prototype for
# every image). Nothing in the step is wrong: six whole training steps
# (crops, student and teacher, loss, centre, AdamW, the EMA) agree with a
# PyTorch twin to round-off (tests/test_ssl_dino_twin.py). With the batch
# norm in the head (`--head-bn on`, the default for DINO), the same run
# learns: after 30 epochs the teacher's distribution for one image has 0.72
# of the uniform entropy while their mean keeps 0.94 (peaked, and different
# prototypes for different images), the bottleneck cosine is 0.68, and the
# k-NN accuracy on held-out digits is 87.5% and 87.9% (seeds 0 and 1)
# against 75.1% and 74.4% for the untrained network, above SimDINO's 79.8%
# and 77.8% with its default head. SimDINO's coding rate spreads the features
# itself and does not need the batch norm.
#
# ## 4. Precision: the coding rate when eps is small
#
# $R$ needs $\log\det(I + aZ^\top Z)$ with $a = p/(m\varepsilon)$. As $\varepsilon$
# shrinks the matrix's condition number grows like $a\|Z\|^2$, and float32, with
# its 7 digits, loses the small eigenvalues first. Worst of all is the case
# self-supervision drifts towards, features that fill only a few directions:
# the zero eigenvalues of $Z^\top Z$ come out of a float32 product as $\pm 10^{-7}$,
# times $a$ that is no longer small beside the 1 of the identity, and the
# log-determinant comes out wrong, then the Cholesky factorisation fails (NaN).
# `whitebox.rate` checks a bound on the error before it computes: float32 input is
# computed in float32 only where that bound holds to 0.1%, otherwise in float64
# (`accumulate=None`, the default), or refused (`accumulate='float32'`).

# %%
# 64 unit features in R^32 that span only 4 directions (a half-collapsed batch)
Zp = unit(rng.standard_normal((64, 4)) @ rng.standard_normal((4, 32))).astype(np.float32)
eps_grid = np.logspace(0, -11, 12)
naive_err, library_err, refused = [], [], []
for e in eps_grid:
    a = 32 / (64 * e)
    exact = 0.5 * np.linalg.slogdet(np.eye(32) + a * Zp.astype(np.float64).T
                                    @ Zp.astype(np.float64))[1]
    M = np.eye(32, dtype=np.float32) + np.float32(a) * (Zp.T @ Zp)
    with np.errstate(all="ignore"):
        try:
            L = np.linalg.cholesky(M)
            naive = float(np.log(np.diag(L).astype(np.float32)).sum())
        except np.linalg.LinAlgError:
            naive = float("nan")
    naive_err.append(abs(naive - exact) / abs(exact))
    library_err.append(abs(float(rate.coding_rate(Zp, math.sqrt(e))) - exact) / abs(exact))
    try:
        rate.coding_rate(Zp, math.sqrt(e), accumulate="float32")
        refused.append(False)
    except ValueError:
        refused.append(True)
for e, n, l, r in zip(eps_grid, naive_err, library_err, refused):
    print(f"eps {e:7.0e}: naive float32 rel. error {n:9.2e} | whitebox.rate {l:8.1e} | "
          f"float32 only: {'refused' if r else 'computed'}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
shown = np.where(np.isfinite(naive_err), naive_err, 1.0)
ax.loglog(eps_grid, shown, "o-", label="float32 Cholesky (NaN drawn at 1)")
ax.loglog(eps_grid, np.maximum(library_err, 1e-17), "s-", label="whitebox.rate (promotes)")
ax.axhline(1e-3, ls="--", color="gray", label="0.1%")
ax.set(xlabel="eps (epsilon^2)", ylabel="relative error of R", title="R of float32 features")
ax.invert_xaxis()
ax.grid(alpha=0.3)
ax.legend(loc="upper left")
fig.tight_layout()
save(fig, "10_precision.png")
try:                      # at eps = 1e-13 even float64 cannot hold R to 0.1%: refused
    rate.coding_rate(Zp, math.sqrt(1e-13))
    float64_refusal = None
except ValueError as err:
    float64_refusal = str(err)
print(f"their eps = 1e-13: {float64_refusal}")

# %% [markdown]
# The same rule guards the loss: `simdino_loss` computes its expansion term with
# `whitebox.rate`, so a float32 run with a small eps gets a float64
# log-determinant rather than a NaN, and an eps too small even for float64 is
# refused with a message naming it.
#
# ## Checks

# %%
full, flat = runs["simdino"], runs["no expansion"]
assert flat["rank"][-1] < 0.5 * flat["rank"][0], (
    f"without the expansion term the effective rank should fall below half its start, "
    f"got {flat['rank'][0]:.2f} -> {flat['rank'][-1]:.2f}")
assert flat["R"][-1] < 0.5 * flat["R"][0], (
    f"without the expansion term R should fall below half its start, got "
    f"{flat['R'][0]:.3f} -> {flat['R'][-1]:.3f}")
assert full["R"][-1] > 2 * flat["R"][-1], (
    f"with the expansion term R should end at least twice the collapsed run's, got "
    f"{full['R'][-1]:.3f} vs {flat['R'][-1]:.3f}")
assert all(np.isfinite(full["loss"])) and all(np.isfinite(runs["dino"]["loss"])), \
    "a training loss was not finite"
bad = [e for e, n in zip(eps_grid, naive_err) if not n < 1e-3]
assert bottleneck_cos[False] > 0.99 and bottleneck_cos[True] < 0.5, (
    f"the head's bottleneck should stay parallel without batch norm and spread with it, got "
    f"mean cosines {bottleneck_cos}")
assert bad, "the naive float32 log-determinant should fail somewhere on the eps grid"
assert max(library_err) < 1e-3, (
    f"whitebox.rate should stay within 0.1% of float64 at every eps, worst "
    f"{max(library_err):.2e}")
assert all(r for e, r in zip(eps_grid, refused) if e <= min(bad)), (
    "accumulate='float32' should refuse every eps at which float32 fails "
    f"(first failing eps {min(bad):.0e})")
assert float64_refusal and "eps" in float64_refusal, \
    "an eps too small even for float64 should be refused with a message naming eps"
assert (OUT / "10_collapse.png").exists() and (OUT / "10_precision.png").exists()
print(f"all checks passed in {time.time() - t_start:.0f} s")
