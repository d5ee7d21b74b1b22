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
# # 07. Theory vs practice: the exact step, the tied projection, CRATE-alpha
#
# Tutorial 02 derived MSSA as an *approximate* gradient step on the
# compression rate and listed where the official code departs from the
# derivation: a learned output projection with a bias instead of the
# subspaces $U$, the temperature $p^{-1/2}$ instead of $b = p/(N\epsilon^2)$,
# and a softmax instead of the inverse $(I + b W_k W_k^\top)^{-1}$. In this
# notebook we
#
# 1. build the **exact** compression step as a layer: its forward through $K$
#    $N \times N$ inverses and its backward, which needs the *second*
#    derivative of $\log\det$;
# 2. see why tying the output projection to $U$ makes the layer a **true
#    gradient step** (and what a learned projection loses);
# 3. build CRATE-alpha's sparse coding: an **overcomplete** dictionary and two
#    ISTA steps from zero, with its backward and a gradient check;
# 4. train the variants side by side on MNIST digits (a small version of
#    `examples/theory_vs_practice.py`).
#
# Tokens are rows: $Z \in \mathbb{R}^{N \times d}$, subspaces
# $U_k \in \mathbb{R}^{d \times p}$, projected tokens $W_k = Z U_k \in \mathbb{R}^{N \times p}$.

# %%
import time

from whitebox.notebook import FAST, OUT, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

import whitebox as wb
from whitebox import functional as F
from whitebox import nn
from whitebox.functional.mssa_exact import exact_heads_backward, exact_heads_forward
from whitebox.gradcheck import GradientCheckError, check_backward, check_module
from whitebox.models import CRATEAlpha
from whitebox.rate import compression_rate, compression_rate_grad, compression_step

rng = np.random.default_rng(0)
t_start = time.time()

# %% [markdown]
# ## 1. The exact step as a layer
#
# The compression rate against $K$ subspaces is
# $R_c(Z \mid U) = \sum_k \tfrac12 \log\det(I_N + b\, W_k W_k^\top)$ with
# $b = p/(N\epsilon^2)$. For one head, $h(W) = \tfrac12\log\det M$ with
# $M = I_N + b W W^\top$, and $d h = \tfrac12 \operatorname{tr}(M^{-1} dM)
# = b \operatorname{tr}(M^{-1} W\, dW^\top)$, so
#
# $$\frac{\partial h}{\partial W} = b\, M^{-1} W,\qquad
#   \frac{\partial R_c}{\partial Z} = b \sum_k M_k^{-1} W_k\, U_k^\top .$$
#
# One gradient step of size $\kappa$ is
# $Z^+ = Z - \kappa b \sum_k M_k^{-1} W_k U_k^\top$. Compare with MSSA: to first
# order $M_k^{-1} W_k \approx W_k - b\, W_k W_k^\top W_k$, so the step is
# $Z - \kappa b \sum_k W_k U_k^\top + \kappa b \sum_k b\, W_k W_k^\top W_k U_k^\top$,
# and $\text{softmax}(s W_k W_k^\top) W_k$ stands where the $+b\, W_k W_k^\top W_k$
# part stands (the leading $-W_k$ part becomes the shrink of $Z$). In the exact
# step the $N \times N$ matrix $M_k^{-1}$ plays the part of the attention
# map. $M_k$ is symmetric with every eigenvalue $\ge 1$, so we invert it
# through its Cholesky factor $M = L L^\top$: $M^{-1} = L^{-\top} L^{-1}$.
#
# The forward, in small steps:

# %%
N, d, K, p = 6, 8, 2, 3
eps, kappa = 0.8, 0.5
Z = rng.standard_normal((N, d))
U = np.linalg.qr(rng.standard_normal((d, K * p)))[0].reshape(d, K, p).transpose(1, 0, 2)  # (K, d, p)
b = p / (N * eps ** 2)


def exact_heads(W, s):
    """H_k = (I + s W_k W_k^T)^{-1} W_k, written out. W (K, N, p)."""
    G = W @ W.transpose(0, 2, 1)                          # (K, N, N) token-token Gram
    M = np.eye(W.shape[1]) + s * G                        # (K, N, N)
    L = np.linalg.cholesky(M)                             # (K, N, N) lower triangular
    L_inv = np.linalg.inv(L)
    M_inv = L_inv.transpose(0, 2, 1) @ L_inv              # (K, N, N)
    H = M_inv @ W                                         # (K, N, p)
    return H, dict(W=W, M_inv=M_inv, H=H, s=s)


W = np.ascontiguousarray(np.einsum("nd,kdp->knp", Z, U))   # (K, N, p): W_k = Z U_k
H, cache = exact_heads(W, b)
step = Z - kappa * b * np.einsum("knp,kdp->nd", H, U)     # Z - kappa b sum_k H_k U_k^T
step_diff = np.abs(step - compression_step(Z, U, eps, kappa)).max()
print(f"our exact step vs whitebox.rate.compression_step: max |diff| = {step_diff:.1e}")

# %% [markdown]
# **The backward.** A layer needs $dW$ given $dH$. With $H = M^{-1} W$ and
# $d(M^{-1}) = -M^{-1}\, dM\, M^{-1}$:
#
# $$dL = \langle dH, M^{-1} dW\rangle - \langle dH, M^{-1} dM\, H\rangle
#      = \langle Q, dW\rangle - \langle Q H^\top, dM\rangle,\qquad Q = M^{-1} dH .$$
#
# $M = I + s W W^\top$ gives $dM = s(dW\, W^\top + W\, dW^\top)$, and the
# gradient reaching $M$, $-QH^\top$, comes back to $W$ symmetrised:
#
# $$dW = Q - s\,(Q H^\top + H Q^\top)\, W = Q - s\,\big(Q (H^\top W) + H (Q^\top W)\big).$$
#
# The second term is the second derivative of $\log\det$ at work (we
# differentiate the gradient $s M^{-1} W$ once more). Dropping it is the
# tempting mistake; the check below catches it.

# %%
def exact_heads_backward_ours(dH, cache):
    W, M_inv, H, s = cache["W"], cache["M_inv"], cache["H"], cache["s"]
    Q = M_inv @ dH                                         # (K, N, p)
    dW = Q - s * (Q @ (H.transpose(0, 2, 1) @ W) + H @ (Q.transpose(0, 2, 1) @ W))
    return dW


exact_errors = check_backward(lambda W: exact_heads(W, b), exact_heads_backward_ours, [W])
print("exact step backward vs finite differences:", exact_errors)
try:
    check_backward(lambda W: exact_heads(W, b), lambda dH, c: c["M_inv"] @ dH, [W])
    first_order_only_caught = False
except GradientCheckError as err:
    first_order_only_caught = True
    print("without the second-order term:", str(err)[:90], "...")

# the library's pair computes the same, batched over (B, K)
H_lib, cache_lib = exact_heads_forward(W[None], b)
dH = rng.standard_normal(H_lib.shape)
lib_diff = max(np.abs(H_lib[0] - H).max(),
               np.abs(exact_heads_backward(dH, cache_lib)[0]
                      - exact_heads_backward_ours(dH[0], cache)).max())
print(f"library exact_heads_forward/backward vs ours: max |diff| = {lib_diff:.1e}")

# %% [markdown]
# ## 2. Tie the output to $U$, and MSSA becomes a true gradient step
#
# In the gradient $b \sum_k M_k^{-1} W_k U_k^\top$ the *same* $U_k$ appears
# twice: it projects the tokens in ($W_k = Z U_k$) and lifts the result back
# out ($\cdot\, U_k^\top$). The official code keeps the first and replaces the
# second by a separate learned matrix with a bias. Then the update
# $Z + [H_1 \dots H_K] W_{out}^\top$ is no longer $-\nabla$ of anything we
# know, and nothing makes it lower $R_c$.
#
# `whitebox.nn.MSSA` switches each departure off alone:
# `out="tied"` uses $[U_1 \dots U_K]$ as the output projection,
# `scale="rate"` uses $b = p/(N\epsilon^2)$ and the step size $\kappa$,
# `update="exact"` uses $-M_k^{-1} W_k$. All three together compute exactly
# $-\kappa \nabla_Z R_c$:

# %%
layer = nn.MSSA(d, heads=K, dim_head=p, out="tied", scale="rate", update="exact", eps=eps,
                kappa=kappa, dtype="float64", seed=0)
U_layer = layer.subspaces()                                # (K, d, p), from the qkv weight
Zb = Z[None]                                               # (1, N, d)
tied_diff = np.abs(Zb + layer(Zb) - compression_step(Zb, U_layer, eps, kappa)).max()
print(f"Z + MSSA_tied,rate,exact(Z) vs the exact compression step: {tied_diff:.1e}")

# A small gradient step lowers Rc. A random learned output projection, same size, need not.
kappa_small = 0.05
layer_small = nn.MSSA(d, heads=K, dim_head=p, out="tied", scale="rate", update="exact",
                      eps=eps, kappa=kappa_small, dtype="float64", seed=0)
rc0 = float(compression_rate(Zb, U_layer, eps)[0])
rc_tied = float(compression_rate(Zb + layer_small(Zb), U_layer, eps)[0])
ups = 0
trials = 50 if FAST else 200
for t in range(trials):
    learned = nn.MSSA(d, heads=K, dim_head=p, scale="rate", update="exact", eps=eps,
                      kappa=kappa_small, dtype="float64", seed=t)
    learned.qkv._params["weight"][...] = layer_small.qkv.param("weight")   # same subspaces
    learned.to_out[0]._params["bias"][...] = 0
    ups += float(compression_rate(Zb + learned(Zb), U_layer, eps)[0]) > rc0
print(f"Rc before {rc0:.4f}, after the tied step {rc_tied:.4f}; a random learned output "
      f"projection raised Rc in {ups}/{trials} draws")

# %% [markdown]
# How far is the softmax from the exact direction? With the tied output and
# the rate scale, the softmax layer computes $\kappa b([\text{SSA}_k]\,U^\top - Z)$,
# so $Z$ becomes $(1-\kappa b) Z + \kappa b\,[\text{SSA}_k]\,U^\top$: the paper's step
# $(1-\kappa b) Z + \kappa b\,\text{MSSA}(Z)$ without the extra factor $b$ the paper
# keeps inside $\text{MSSA}(Z) = b\,[\text{SSA}_k]\,U^\top$ (as in tutorial 02, the
# softmax replaces the whole weight $b\,W_k W_k^\top$). Its $-\kappa b Z$
# term stands for the exact step's leading term $-\kappa b\, Z \sum_k U_k U_k^\top$,
# which is the same only when the $U_k$ are orthonormal and complete
# ($\sum_k U_k U_k^\top = I$, $Kp = d$). And as $b \to 0$ the softmax becomes
# uniform, so $\text{SSA}_k$ returns the *mean token* in every row: a pull
# toward the mean that the exact step does not have. We measure the cosine of
# the two directions while $\epsilon$ grows ($b$ shrinks), for random $U$
# (as initialised), orthonormal complete $U$, and orthonormal $U$ with the
# tokens centred:

# %%
def cosine(a, c):
    return float((a * c).sum() / np.linalg.norm(a) / np.linalg.norm(c))


d2 = K * p                                                 # complete: K p = d
Z2 = rng.standard_normal((1, N, d2))
Q = np.linalg.qr(rng.standard_normal((d2, d2)))[0]         # orthonormal columns
eps_sweep = [0.5, 1.0, 2.0, 4.0, 8.0, 64.0]
cos_sweep = {}
for label, orthonormal, centred in (("random U", False, False),
                                    ("orthonormal U", True, False),
                                    ("orthonormal U, centred tokens", True, True)):
    tokens = Z2 - Z2.mean(axis=1, keepdims=True) if centred else Z2
    cos_sweep[label] = []
    for e in eps_sweep:
        soft = nn.MSSA(d2, heads=K, dim_head=p, out="tied", scale="rate", eps=e, kappa=1.0,
                       dtype="float64", seed=0)
        if orthonormal:
            soft.qkv._params["weight"][...] = Q.T           # U_k = columns k p .. (k+1) p of Q
        exact_dir = -compression_rate_grad(tokens, soft.subspaces(), e)
        cos_sweep[label].append(cosine(soft(tokens), exact_dir))
    print(f"{label:31s} cosine for eps = {eps_sweep}: {np.round(cos_sweep[label], 4)}")

# %% [markdown]
# Only with orthonormal, complete subspaces and centred tokens does the
# softmax step turn into the exact step as $b \to 0$. Nothing in the
# official model keeps $U$ orthonormal, and LayerNorm centres each token's
# *features*, not the tokens, so a trained CRATE sits on the first curve.

# %% [markdown]
# ## 3. CRATE-alpha: an overcomplete dictionary, two ISTA steps from zero
#
# CRATE sparsifies with one ISTA step warm-started at the input, against a
# square dictionary. CRATE-alpha (Yang et al. 2024) takes a dictionary
# $D \in \mathbb{R}^{d \times m}$ with $m = 4d$ atoms, starts from zero, takes
# two steps, decodes with a second dictionary $D_1$ and adds a residual:
#
# $$c_1 = \text{ReLU}(\eta\, z D - \eta\lambda),\qquad
#   c_2 = \text{ReLU}\big(c_1 + \eta (z D - c_1 D^\top D) - \eta\lambda\big),\qquad
#   x \leftarrow x + c_2 D_1^\top .$$
#
# The first step is the proximal step from $c = 0$ (the LASSO gradient at zero
# is $-zD$); the second is a plain ISTA step from $c_1$. The forward, with
# $S = I - \eta D^\top D$ so that the second pre-activation is $c_1 S + \eta a - \eta\lambda$:

# %%
eta, lam = 0.5, 0.05                     # larger than the official 0.1 so both ReLUs matter
dz, m = 6, 24
z = rng.standard_normal((2, 5, dz))
D = rng.standard_normal((dz, m)) / np.sqrt(dz)


def two_steps_forward(z, D):
    a = z @ D                                             # (..., m) correlations with atoms
    u1 = eta * a - eta * lam
    c1 = np.maximum(u1, 0)                                # first step from zero
    S = np.eye(D.shape[1]) - eta * D.T @ D                # (m, m)
    u2 = c1 @ S + u1                                      # c1 + eta (a - c1 D^T D) - eta lam
    c2 = np.maximum(u2, 0)
    return c2, dict(z=z, D=D, c1=c1, S=S, u1=u1, u2=u2)


# %% [markdown]
# **Backward**, a `d`-twin per variable, from the last line up:
# `du2 = dc2 [u2 > 0]`; `dc1 = du2 S^T`; `du1 = du2 + dc1 [u1 > 0]`;
# `da = eta du1`; `dS = c1^T du2`; through $S = I - \eta D^\top D$:
# `dD = -eta D (dS + dS^T)`; through $a = zD$: `dD += z^T da`, `dz = da D^T`.

# %%
def two_steps_backward(dc2, cache):
    z, D, c1, S, u1, u2 = (cache[k] for k in ("z", "D", "c1", "S", "u1", "u2"))
    du2 = dc2 * (u2 > 0)
    dc1 = du2 @ S.T
    du1 = du2 + dc1 * (u1 > 0)
    da = eta * du1
    dS = c1.reshape(-1, m).T @ du2.reshape(-1, m)         # (m, m)
    dD = z.reshape(-1, dz).T @ da.reshape(-1, m) - eta * D @ (dS + dS.T)
    return da @ D.T, dD


ista_errors = check_backward(two_steps_forward, two_steps_backward, [z, D])
c2, _ = two_steps_forward(z, D)
ista_lib_diff = np.abs(c2 - F.overcomplete_ista_forward(z, D, eta, lam)[0]).max()
print("two ISTA steps backward vs finite differences:", ista_errors)
print(f"ours vs whitebox.functional.overcomplete_ista_forward: {ista_lib_diff:.1e};  "
      f"non-zero codes: {(c2 > 0).mean():.2f}")

# %% [markdown]
# The whole layer, `nn.AlphaLayer`, wraps this pair with the decoder $D_1$,
# both residuals and LayerNorms (eps $10^{-6}$, as the official code), and
# the official MSSA without an output bias. A gradient check of the layer,
# and of a whole tiny CRATE-alpha:

# %%
alpha_layer = nn.AlphaLayer(8, heads=2, dim_head=4, expansion=4, dtype="float64", seed=0)
alpha_layer_errors = check_module(alpha_layer, [rng.standard_normal((2, 5, 8))], tol=1e-6)
tiny_alpha = CRATEAlpha(8, 4, 3, dim=8, depth=2, heads=2, channels=1, dtype="float64", seed=0)
labels = np.array([0, 2])
alpha_model_errors = check_module(tiny_alpha, [np.random.default_rng(1).standard_normal((2, 1, 8, 8))],
                                  loss=lambda out: wb.losses.cross_entropy(out, labels),
                                  tol=1e-6, floor=1e-4)
print(f"AlphaLayer worst relative error {max(alpha_layer_errors.values()):.1e}; "
      f"CRATE-alpha {max(alpha_model_errors.values()):.1e}")

# %% [markdown]
# ## 4. What the approximations cost when a network is trained
#
# Same width, depth, heads, data, seeds and number of steps; only the
# attention (or, for CRATE-alpha, the block) changes. Each variant is a few
# flags of the one training job, so each trains with the same recipe and
# reports the same per-layer measures:
#
#     python -m whitebox.train --attention-out tied --attention-scale rate \
#         --attention-eps 1 --attention-kappa 0.5 --attention-update exact
#
# Here we call the same job from Python (`whitebox.train.run`, settings
# as keywords). This is a small version of `examples/theory_vs_practice.py`,
# which trains all six variants over several seeds and writes the table of
# the docs.

# %%
from whitebox.train import run

n_train, epochs = (1000, 3) if FAST else (4000, 6)
common = dict(n_train=n_train, n_test=500, epochs=epochs, dim=32, depth=2, heads=2,
              dim_head=16, patch=7, figures=False, progress=False, overwrite=True,
              # a short run: a constant learning rate, no shifts or distortions, no label
              # smoothing
              lr=3e-3, min_lr=3e-3, warmup_epochs=0, max_shift=0, rotate=0, zoom=0, warp=0,
              label_smoothing=0.0)
variants = {
    "official": dict(model="crate"),
    "all three": dict(model="crate", attention_out="tied", attention_update="exact",
                      attention_scale="rate", attention_eps=1.0, attention_kappa=0.5),
    "CRATE-alpha": dict(model="crate-alpha"),
}
results = {name: run("classify", out=str(OUT / "runs" / name.replace(" ", "-")),
                     **common, **flags)
           for name, flags in variants.items()}     # name -> one metric dict per epoch
if FAST:
    print(f"FAST MODE: {n_train} digits, {epochs} epochs, one seed. These numbers are NOT "
          "the full comparison's and may rank the variants the other way round; the "
          "full run's table is the one below this cell.")
print("| variant | held-out acc | Rc per layer | s / step |\n|---|---|---|---|")
for name, history in results.items():
    last = history[-1]
    print(f"| {name} | {100 * last['test_acc']:.1f}% | "
          f"{' '.join(f'{v:.0f}' for v in last['rc'])} | "
          f"{np.median([h['step_seconds'] for h in history]):.3f} |")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, history in results.items():
    axes[0].plot([h["epoch"] for h in history], [100 * h["test_acc"] for h in history],
                 marker="o", label=name)
axes[0].set_title("held-out accuracy (%)")
axes[0].set_xlabel("epoch")
axes[0].legend()
for label, values in cos_sweep.items():
    axes[1].plot(eps_sweep, values, marker="o", label=label)
axes[1].set_xscale("log")
axes[1].legend(fontsize=8)
axes[1].set_title("cosine(softmax step, exact step), tied, rate scale")
axes[1].set_xlabel("epsilon")
fig.tight_layout()
save(fig, "07_theory_vs_practice.png", dpi=110)

# %% [markdown]
# The full comparison (`python examples/theory_vs_practice.py --seeds 0 1 2`: d 64,
# depth 4, 4 heads, patch 7, 6 epochs on 4,000 digits, 1,000 held out, each
# run through the training job, `python -m whitebox.train --attention-update
# exact ...`; two busy CPU cores, with the fused loops) measured:
#
# | variant | held-out acc | Rc per layer | Rc falls monotonically | non-zero fraction per layer | s / step | parameters |
# |---|---|---|---|---|---|---|
# | official | 89.4% ± 0.8 | 111 111 109 101 | no | 0.49 0.41 0.40 0.44 | 0.014 | 55,788 |
# | tied | 86.0% ± 1.5 | 110 109 101 88 | yes | 0.48 0.39 0.39 0.39 | 0.010 | 39,148 |
# | rate scale | 90.3% ± 0.9 | 112 114 106 96 | no | 0.49 0.47 0.48 0.47 | 0.010 | 55,788 |
# | exact step | 92.7% ± 0.4 | 116 114 117 118 | no | 0.49 0.36 0.32 0.33 | 0.029 | 55,788 |
# | all three | 92.1% ± 1.0 | 121 119 121 120 | no | 0.49 0.35 0.30 0.30 | 0.026 | 39,148 |
# | CRATE-alpha | 90.1% ± 0.6 | 114 109 104 102 | yes | 0.42 0.43 0.45 0.47 | 0.039 | 169,994 |
#
# On this small budget the exact step is the best single change (+3.3
# points, at about twice the step time); tying the output alone costs 3.4
# points, but tied together with the rate scale and the exact step (a true
# gradient step, 30% fewer parameters) it still beats the official model.
# The measured Rc (unit-length tokens, $\epsilon^2 = 0.01$, the official
# measurement) is not the rate the exact step descends ($\epsilon = 1$, raw
# tokens), so the variants that follow the theory most closely do not show
# the steepest measured compression; the tied output alone and CRATE-alpha
# are the variants whose measured Rc falls layer after layer. One data set, short runs: read the
# differences of a point or two as noise.

# %% [markdown]
# ## Summary
#
# - The exact compression step is a layer: $-M_k^{-1} W_k$ with
#   $M_k = I + s W_k W_k^\top$ ($N \times N$, inverted through Cholesky) in
#   place of $\text{softmax}(s W_k W_k^\top) W_k$. Its backward is
#   $dW = Q - s(Q H^\top + H Q^\top) W$, $Q = M^{-1} dH$: the second derivative
#   of $\log\det$.
# - Tied output ($[U_1 \dots U_K]$), rate scale and exact step together make
#   MSSA exactly $-\kappa\nabla_Z R_c$: a small step always lowers $R_c$; a
#   learned output projection does not promise that.
# - CRATE-alpha sparsifies with two ISTA steps from zero against an
#   overcomplete $D$, decodes with $D_1$ and keeps a residual.
#
# ## Exercises
#
# 1. **The other Gram side.** The push-through identity
#    $W(I_p + sW^\top W)^{-1} = (I_N + sWW^\top)^{-1}W$ lets the exact step
#    invert $p \times p$ matrices instead. Write `exact_heads_cols(W, s)` that
#    does so and returns the same $H$.
# 2. **More ISTA steps.** Write `ista_from_zero(z, D, T, step)`, $T$ proximal
#    steps of size `step` from $c = 0$ (with the `lam` above), so that $T = 2$,
#    `step = eta` is `two_steps_forward`. With `eta = 0.5` and this random $D$
#    the iteration diverges ($\eta$ must stay below $2/L$, $L = \|D\|_2^2$);
#    with `step = 1 / L` the LASSO objective falls with $T$.
# 3. **The pull toward the mean.** With the orthonormal $U$ above, uncentred
#    tokens `Z2` and `eps = 64.0`, the difference between the softmax step and
#    the exact step should be close to $\kappa b$ times the mean token in every
#    row. Compute the relative error of that prediction and store it in
#    `pull_err`.

# %%
### BEGIN SOLUTION
def exact_heads_cols(W, s):
    Wt = W.transpose(0, 2, 1)
    return W @ np.linalg.inv(np.eye(W.shape[2]) + s * Wt @ W)          # (K, N, p)


def ista_from_zero(z, D, T, step):
    c = np.zeros(z.shape[:-1] + (D.shape[1],))
    for _ in range(T):
        c = np.maximum(c + step * (z - c @ D.T) @ D - step * lam, 0)
    return c


soft_far = nn.MSSA(d2, heads=K, dim_head=p, out="tied", scale="rate", eps=64.0, kappa=1.0,
                   dtype="float64", seed=0)
soft_far.qkv._params["weight"][...] = Q.T
b_far = p / (N * 64.0 ** 2)
gap = soft_far(Z2) + compression_rate_grad(Z2, soft_far.subspaces(), 64.0)   # kappa = 1
predicted = b_far * np.broadcast_to(Z2.mean(axis=1, keepdims=True), Z2.shape)
pull_err = float(np.abs(gap - predicted).max() / np.abs(predicted).max())
### END SOLUTION


def lasso(c, z, D):
    return 0.5 * ((z - c @ D.T) ** 2).sum() + lam * c.sum()


print(f"exercise 1: |cols - rows| = {np.abs(exact_heads_cols(W, b) - H).max():.1e}")
L_D = np.linalg.norm(D, 2) ** 2
lasso_T = [lasso(ista_from_zero(z, D, T, 1 / L_D), z, D) for T in (1, 2, 5, 20)]
print("exercise 2: LASSO objective after T = 1, 2, 5, 20 steps:", np.round(lasso_T, 3))
print(f"exercise 3: relative error of the mean-pull prediction: {pull_err:.1e}")
assert np.abs(exact_heads_cols(W, b) - H).max() < 1e-12
assert np.abs(ista_from_zero(z, D, 2, eta) - c2).max() < 1e-12
assert np.all(np.diff(lasso_T) < 0)
assert pull_err < 0.05

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert step_diff < 1e-12
assert max(exact_errors.values()) < 1e-7 and first_order_only_caught
assert lib_diff < 1e-12
assert tied_diff < 1e-12
assert rc_tied < rc0 and ups > 0
centred = cos_sweep["orthonormal U, centred tokens"]
assert centred[-1] > 0.999 and centred[-1] > cos_sweep["orthonormal U"][-1]
assert cos_sweep["random U"][-1] < 0.9
assert max(ista_errors.values()) < 1e-7 and ista_lib_diff < 1e-12
assert max(alpha_layer_errors.values()) < 1e-6 and max(alpha_model_errors.values()) < 1e-6
for name, history in results.items():
    assert history[-1]["test_acc"] > (0.2 if FAST else 0.8), (name, history[-1]["test_acc"])
    assert history[-1]["train_loss"] < history[0]["train_loss"], name
assert (OUT / "07_theory_vs_practice.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
