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
# # 05. Denoising is compression: the CRATE decoder
#
# The encoder of tutorials 02 and 03 compresses tokens onto subspaces (MSSA)
# and sparsifies them (ISTA). The second claim of the CRATE papers is that
# the way back, from compressed features to data, is a CRATE network too: a
# **decoder** that runs the same structured step in reverse. The argument goes
# through denoising. In this notebook we
#
# 1. derive the Bayes denoiser of a mixture of low-rank Gaussians and find
#    that it has the form of attention (checked against Monte Carlo);
# 2. connect it to the score by Tweedie's formula, and measure how close one
#    compression step $Z - \kappa \nabla R^c$, and MSSA's update, come to that
#    denoising step on the same data;
# 3. reverse a layer: the decoder layer (a linear step, then MSSA
#    *subtracted*), its backward by hand with `d`-twins, and a gradient check
#    that catches a wrong sign;
# 4. train a small CRATE-MAE (masked autoencoder) on MNIST digits and look at
#    its reconstructions.
#
# Tokens are rows, $x \in \mathbb{R}^{d}$; the $K$ subspaces have orthonormal
# bases $U_k \in \mathbb{R}^{d \times p}$.

# %%
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

import whitebox as wb
from whitebox import functional as F
from whitebox.data import load_dataset, subspace_mixture
from whitebox.gradcheck import GradientCheckError, check_backward
from whitebox.models import CRATEMAE
from whitebox.nn import DecoderLayer
from whitebox.rate import compression_rate_grad

rng = np.random.default_rng(0)
t_start = time.time()


# %% [markdown]
# ## 1. The Bayes denoiser of a mixture of low-rank Gaussians
#
# **The data model.** Pick a subspace $k$ with probability $1/K$, then
# $x = U_k c$ with $c \sim \mathcal{N}(0, I_p)$: $x \sim \mathcal{N}(0, U_k U_k^\top)$,
# a Gaussian that lives on a $p$-dimensional subspace. We observe
# $x_t = x + t\,g$ with $g \sim \mathcal{N}(0, I_d)$. What is the best guess
# of $x$ in mean squared error, $\mathbb{E}[x \mid x_t]$?
#
# **One component.** Given $k$, $(x, x_t)$ is jointly Gaussian with
# $\operatorname{Cov}(x, x_t) = U_kU_k^\top$ and $\Sigma_k = \operatorname{Cov}(x_t) = U_kU_k^\top + t^2 I$,
# so $\mathbb{E}[x \mid x_t, k] = U_kU_k^\top \Sigma_k^{-1} x_t$. Since $U_kU_k^\top$ is a
# projection, $\Sigma_k^{-1} = \tfrac{1}{t^2}(I - U_kU_k^\top) + \tfrac{1}{1+t^2} U_kU_k^\top$
# (check: multiply by $\Sigma_k$), and
#
# $$\mathbb{E}[x \mid x_t, k] = \frac{1}{1+t^2}\, U_k U_k^\top x_t .$$
#
# Project onto the subspace, then shrink by the signal-to-total variance.
#
# **Which component.** By Bayes, $P(k \mid x_t) \propto \mathcal{N}(x_t; 0, \Sigma_k)$.
# Every $\Sigma_k$ has the same determinant, $(1+t^2)^p\, t^{2(d-p)}$, so only the
# quadratic form differs between components:
#
# $$-\tfrac12 x_t^\top \Sigma_k^{-1} x_t = -\frac{\|x_t\|^2}{2t^2}
#   + \frac{\|U_k^\top x_t\|^2}{2}\Big(\frac{1}{t^2} - \frac{1}{1+t^2}\Big)
#   = \text{const} + \frac{\|U_k^\top x_t\|^2}{2t^2(1+t^2)} .$$
#
# **Together** (the law of total expectation over $k$):
#
# $$\boxed{\;\mathbb{E}[x \mid x_t] = \frac{1}{1+t^2} \sum_k
#   \operatorname{softmax}_k\!\Big(\frac{\|U_k^\top x_t\|^2}{2t^2(1+t^2)}\Big)\, U_kU_k^\top x_t\;}$$
#
# A softmax over subspaces of squared projections, weighting projections:
# the form of attention, with the subspaces $U_k$ in the role of the heads.
#
# We take the subspaces from `whitebox.data.subspace_mixture`. Its
# coefficients have variance $1/p$ (unit expected norm), so we multiply its
# points by $\sqrt{p}$ to get the unit-variance model above. With $d = Kp$
# the subspaces fill the space, $\sum_k U_kU_k^\top = I$ (the assumption MSSA
# makes in tutorial 02).

# %%
d, K, p = 12, 3, 4
n_tokens = 300
X, labels, U = subspace_mixture(n_tokens, d, K, p, rng=1)       # U: (K, d, p)
X = X * np.sqrt(p)                                               # (N, d), c ~ N(0, I_p)


def softmax(s, axis=-1):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def bayes_denoiser(xt, U, t):
    """E[x | x_t] for the equal-weight mixture of N(0, U_k U_k^T). xt (N, d) -> (N, d)."""
    proj = np.einsum("kdp,nd->nkp", U, xt)                       # U_k^T x_t, (N, K, p)
    logits = (proj ** 2).sum(-1) / (2 * t ** 2 * (1 + t ** 2))   # (N, K)
    weights = softmax(logits, axis=1)                            # P(k | x_t), (N, K)
    back = np.einsum("kdp,nkp->nkd", U, proj)                    # U_k U_k^T x_t, (N, K, d)
    return np.einsum("nk,nkd->nd", weights, back) / (1 + t ** 2)


# %% [markdown]
# **Monte Carlo check.** The posterior mean is also a ratio of prior
# expectations: $\mathbb{E}[x \mid x_t] = \mathbb{E}_x[x\, q(x)] / \mathbb{E}_x[q(x)]$ with
# $q(x) = \exp(-\|x_t - x\|^2 / 2t^2)$, the likelihood of the observation.
# Draw many $x$ from the prior and weight them (self-normalised importance
# sampling). No formula of ours enters the estimate.

# %%
t_mc = 0.5
n_prior = 200_000 if FAST else 1_000_000
prior_k = rng.integers(0, K, n_prior)
prior = np.einsum("ndp,np->nd", U[prior_k], rng.standard_normal((n_prior, p)))  # x = U_k c
queries = X[:6] + t_mc * rng.standard_normal((6, d))                         # six x_t
mc = np.empty_like(queries)
ess = np.empty(len(queries))
for i, q in enumerate(queries):
    logw = -((prior - q) ** 2).sum(1) / (2 * t_mc ** 2)                      # (n_prior,)
    w = np.exp(logw - logw.max())
    mc[i] = w @ prior / w.sum()
    ess[i] = w.sum() ** 2 / (w ** 2).sum()                                   # effective samples
formula = bayes_denoiser(queries, U, t_mc)
mc_rel = np.linalg.norm(mc - formula, axis=1) / np.linalg.norm(formula, axis=1)
print(f"Monte Carlo ({n_prior} prior draws, effective samples {ess.min():.0f}..{ess.max():.0f})"
      f" vs the formula: relative error per query {np.round(mc_rel, 3)}")

# %% [markdown]
# The residual is Monte Carlo noise, about $1/\sqrt{\text{effective samples}}$
# of the posterior spread. A second check that needs no sampling at all
# follows from Tweedie's formula.
#
# ## 2. Tweedie, the score, and one compression step
#
# **Tweedie's formula.** For $x_t = x + t g$ with Gaussian $g$, whatever the
# prior, $\mathbb{E}[x \mid x_t] = x_t + t^2\, \nabla \log p_t(x_t)$, with $p_t$ the density
# of $x_t$. (Differentiate $p_t(x_t) = \int p(x)\, \mathcal{N}(x_t; x, t^2 I)\,dx$ under
# the integral: $\nabla p_t = \int p(x)\, \mathcal{N}(\cdot)\,(x - x_t)/t^2\,dx$.)
# So the denoiser *is* a step along the score. For our mixture, $\log p_t$ is
# a log-sum-exp of Gaussian log-densities; differentiate it numerically and
# compare.

# %%
def log_density(xt, U, t):
    """log p_t(x_t) for the equal-weight mixture: covariances U_k U_k^T + t^2 I. xt (N, d)."""
    K, d, p = U.shape
    sq = (xt ** 2).sum(-1)[:, None]                                  # (N, 1)
    proj = (np.einsum("kdp,nd->nkp", U, xt) ** 2).sum(-1)            # (N, K)
    quad = sq / t ** 2 - proj / (t ** 2 * (1 + t ** 2))              # x^T Sigma_k^{-1} x
    logdet = p * np.log(1 + t ** 2) + (d - p) * np.log(t ** 2)     # p eigenvalues 1 + t^2, d - p of t^2
    logs = -0.5 * (quad + logdet + d * np.log(2 * np.pi)) - np.log(K)
    top = logs.max(1, keepdims=True)
    return (top + np.log(np.exp(logs - top).sum(1, keepdims=True)))[:, 0]


def numerical_score(xt, U, t, h=1e-5):
    score = np.empty_like(xt)
    for j in range(xt.shape[1]):
        e = np.zeros(xt.shape[1])
        e[j] = h
        score[:, j] = (log_density(xt + e, U, t) - log_density(xt - e, U, t)) / (2 * h)
    return score


tweedie_err = 0.0
for t in (0.25, 0.5, 1.0):
    xt = X[:50] + t * rng.standard_normal((50, d))
    tweedie = xt + t ** 2 * numerical_score(xt, U, t)
    tweedie_err = max(tweedie_err, np.abs(tweedie - bayes_denoiser(xt, U, t)).max())
print(f"max |x_t + t^2 grad log p_t - the Bayes denoiser| = {tweedie_err:.1e}")

# %% [markdown]
# **Compression as denoising.** Now take all $N$ noisy tokens $Z_t$ at once
# (rows) and the compression rate of tutorial 01,
# $R^c(Z \mid U) = \sum_k \tfrac12 \log\det(I + b\, (ZU_k)^\top ZU_k)$. A gradient
# step $Z_t - \kappa \nabla R^c(Z_t)$ shrinks each token's coordinates in
# every subspace, least where many tokens share large coordinates: a token's
# own subspace keeps its signal, the other subspaces (holding only noise)
# shrink. That is what the denoiser does with its softmax. Tutorial 02 showed
# that MSSA approximates this step (Neumann series, softmax for the Gram
# weights). Here we measure all three updates on the same tokens:
#
# - the **score step** $\mathbb{E}[x \mid x_t] - x_t = t^2 \nabla\log p_t$ (optimal);
# - the **compression step** $-\nabla R^c(Z_t \mid U)$ (exact, `whitebox.rate`);
# - the **MSSA step** $\sum_k \operatorname{softmax}(s\,W_kW_k^\top) W_k U_k^\top - Z_t$,
#   $W_k = Z_tU_k$, $s = p^{-1/2}$ (the idealised layer: $U$ as `qkv`, $U$ as `to_out`,
#   so $Z + \kappa(\text{MSSA}(Z) - Z)$ is the residual step).
#
# Two numbers per update $u$: its cosine with the score step, and the error
# left after the best step size, $\min_\kappa \|Z_t + \kappa u - X\|^2 / N$
# ($\kappa$ fitted against the clean tokens: how good the *direction* is).

# %%
def cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def best_step_error(Zt, u, X):
    kappa = ((X - Zt) * u).sum() / (u * u).sum()                 # least squares in kappa
    return float(((Zt + kappa * u - X) ** 2).sum(1).mean())


def mssa_update(Zt, U):
    W = np.einsum("kdp,nd->knp", U, Zt)                          # (K, N, p)
    A = softmax(W @ W.transpose(0, 2, 1) * U.shape[2] ** -0.5)   # (K, N, N)
    return np.einsum("knm,kmp,kdp->nd", A, W, U) - Zt            # (N, d)


noise_levels = (0.25, 0.5, 1.0)
table = {}
for t in noise_levels:
    Zt = X + t * rng.standard_normal(X.shape)                    # (N, d)
    score_step = bayes_denoiser(Zt, U, t) - Zt
    compress_step = -compression_rate_grad(Zt, U, 0.5)           # eps = 0.5 (the papers' epsilon)
    attn_step = mssa_update(Zt, U)
    table[t] = {"noisy": float(((Zt - X) ** 2).sum(1).mean()),
                "Bayes (MMSE)": best_step_error(Zt, score_step, X),
                "cos(compression, score)": cosine(compress_step, score_step),
                "compression, best kappa": best_step_error(Zt, compress_step, X),
                "cos(MSSA, score)": cosine(attn_step, score_step),
                "MSSA, best kappa": best_step_error(Zt, attn_step, X)}
print(f"{'':<26}" + "".join(f"{'t = ' + str(t):>12}" for t in noise_levels))
for key in table[noise_levels[0]]:
    print(f"{key:<26}" + "".join(f"{table[t][key]:12.3f}" for t in noise_levels))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
rows = ("noisy", "compression, best kappa", "MSSA, best kappa", "Bayes (MMSE)")
width = 0.2
for i, key in enumerate(rows):
    axes[0].bar(np.arange(len(noise_levels)) + (i - 1.5) * width,
                [table[t][key] / table[t]["noisy"] for t in noise_levels], width, label=key)
axes[0].set_xticks(np.arange(len(noise_levels)), [f"t = {t}" for t in noise_levels])
axes[0].set_ylabel("error left / noisy error")
axes[0].set_title("one step, best step size")
axes[0].legend(fontsize=8)
for key in ("cos(compression, score)", "cos(MSSA, score)"):
    axes[1].plot(noise_levels, [table[t][key] for t in noise_levels], "o-", label=key)
axes[1].set_xlabel("noise level t")
axes[1].set_ylabel("cosine with the score step")
axes[1].set_ylim(0, 1.02)
axes[1].set_title("direction of the update")
axes[1].legend(fontsize=8)
fig.tight_layout()
save(fig, "05_denoising_steps.png")

# %% [markdown]
# Read the columns. At $t = 1$ (noise as strong as the signal per direction)
# the exact compression step points almost exactly along the score (cosine
# near 1), and one step with a good $\kappa$ removes most of the error the
# Bayes denoiser removes. At smaller noise the two part ways: the Bayes
# denoiser makes a sharp choice of subspace, a gradient step on $R^c$ only
# shrinks, so the cosine drops (and the best one-step error stays well above
# the MMSE). The idealised MSSA step, with its softmax over *tokens* instead of
# over *subspaces*, tracks the score about as well as the exact gradient at
# small and medium noise and worse at $t = 1$, where the token-token softmax
# saturates; still, every update removes a good share of the error. "One
# compression step is a denoising step" is an approximation, good when the
# noise is large, which is the regime a diffusion-style reverse process starts in.
#
# **Why a decoder is again CRATE-like.** If every encoder layer is (close to)
# a denoising step, the encoder runs a diffusion process forwards toward
# structured, compressed features; generating data from features means
# running the steps backwards: *expansion* instead of compression. The
# official CRATE-MAE decoder does exactly this with the same parts:
# subtract the MSSA update instead of adding it, and undo the ISTA step with
# a linear map.
#
# ## 3. Reversing a layer: the decoder layer and its backward
#
# Encoder layer (tutorial 03): $Z^{\ell+1/2} = Z^\ell + \text{MSSA}(\text{LN}(Z^\ell))$,
# $Z^{\ell+1} = \text{ISTA}(\text{LN}(Z^{\ell+1/2}))$. Decoder layer, the two
# halves in reverse order (official `model/crate_ae/crate_decoder.py`):
#
# $$Y = \text{LN}_0(X)\, W^\top \quad\text{(the inverse of ISTA: a square linear map, no bias)},$$
# $$\text{out} = Y - \text{MSSA}(\text{LN}_1(Y)) \quad\text{(compression run backwards)}.$$
#
# Why a linear map inverts ISTA: the ISTA step is
# $\operatorname{ReLU}(XM - \eta\lambda)$ with $M$ close to the identity; on its
# active set it is linear, and the best linear inverse is what the decoder
# learns (freely: $W$ is not tied to the encoder's dictionary).
#
# Forward in named steps, with the library's LayerNorm and MSSA pairs
# (derived in tutorials 02 and earlier) and the new parts by hand:

# %%
def decoder_steps_forward(x, g0, b0, W, g1, b1, W_qkv, W_out, b_out, heads):
    """One decoder layer on x (B, N, d), in named steps. Returns out (B, N, d), cache."""
    ### BEGIN SOLUTION
    h0, ln0 = F.layernorm_forward(x, g0, b0)                      # LN0(x), (B, N, d)
    y = h0 @ W.T                                                 # the linear step, (B, N, d)
    h1, ln1 = F.layernorm_forward(y, g1, b1)                      # LN1(y), (B, N, d)
    m, attn = F.mssa_forward(h1, W_qkv, W_out, b_out, heads)     # MSSA(LN1(y)), (B, N, d)
    out = y - m                                                  # expansion: subtract
    return out, dict(ln0=ln0, h0=h0, W=W, ln1=ln1, attn=attn)
    ### END SOLUTION


dim, heads = 8, 2
layer = DecoderLayer(dim, heads, dim // heads, dtype="float64", seed=3)
params = [layer.inverse_ista.norm.param("weight"), layer.inverse_ista.norm.param("bias"),
          layer.inverse_ista.fn.param("weight"), layer.attn.norm.param("weight"),
          layer.attn.norm.param("bias"), layer.attn.fn.qkv.param("weight"),
          layer.attn.fn.to_out[0].param("weight"), layer.attn.fn.to_out[0].param("bias")]
x_small = rng.standard_normal((2, 5, dim))                       # (B, N, d)
check("decoder forward in steps vs whitebox.nn.DecoderLayer",
      decoder_steps_forward(x_small, *params, heads)[0], layer(x_small), tol=1e-12)


# %% [markdown]
# Backward, with `d`-twins, walking the steps in reverse:
#
# - `out = y - m`: `dy = dout` (the direct path) and `dm = -dout`.
# - MSSA: `dh1, dW_qkv, dW_out, db_out = mssa_backward(dm)`: the branch is
#   handed **`-dout`**, so its parameter gradients carry the minus sign.
# - LN1: `dy += layernorm_backward(dh1)` (the second path into `y`).
# - `y = h0 W^T`: `dW = dy^T h0` (summed over all tokens), `dh0 = dy W`.
# - LN0: `dx = layernorm_backward(dh0)`.

# %%
def decoder_steps_backward(dout, cache, sign_inside=True):
    """Gradients of one decoder layer: (dx, dg0, db0, dW, dg1, db1, dW_qkv, dW_out, db_out).

    sign_inside=False is a tempting mistake: run the MSSA backward on +dout and
    negate only its input gradient.
    """
    ### BEGIN SOLUTION
    d = cache["W"].shape[0]
    dy = dout.copy()                                             # out = y - m: direct path
    if sign_inside:
        dh1, dW_qkv, dW_out, db_out = F.mssa_backward(-dout, cache["attn"])
    else:
        dh1, dW_qkv, dW_out, db_out = F.mssa_backward(dout, cache["attn"])
        dh1 = -dh1
    dy_ln, dg1, db1 = F.layernorm_backward(dh1, cache["ln1"])
    dy += dy_ln                                                  # LN1's path into y
    dW = dy.reshape(-1, d).T @ cache["h0"].reshape(-1, d)        # (d, d), summed over tokens
    dh0 = dy @ cache["W"]                                        # (B, N, d)
    dx, dg0, db0 = F.layernorm_backward(dh0, cache["ln0"])
    return dx, dg0, db0, dW, dg1, db1, dW_qkv, dW_out, db_out
    ### END SOLUTION


def forward_fn(x, *ps):
    return decoder_steps_forward(x, *ps, heads)


decoder_errors = check_backward(forward_fn, decoder_steps_backward, [x_small, *params])
print("relative errors:", {i: f"{e:.1e}" for i, e in decoder_errors.items()})
assert max(decoder_errors.values()) < 1e-6, \
    f"decoder backward: largest relative error {max(decoder_errors.values()):.1e} > 1e-6"

# %% [markdown]
# Now the tempting mistake: `dx` is the same either way (the MSSA backward
# is linear in its upstream gradient), but the parameters of the subtracted
# branch get the wrong sign. The check names the first wrong array: input 6
# is `W_qkv`.

# %%
try:
    check_backward(forward_fn, lambda dout, c: decoder_steps_backward(dout, c, False),
                   [x_small, *params])
    wrong_sign_caught = False
except GradientCheckError as err:
    wrong_sign_caught = True
    print("MSSA backward on +dout, only dx negated:", err)

# %% [markdown]
# The library's `whitebox.nn.DecoderLayer` holds the same parameters under the
# official names (`0.norm`, `0.fn.weight`, `1.norm`, `1.fn.qkv`, `1.fn.to_out.0`)
# and must agree with our steps exactly, forward and backward:

# %%
dout_small = rng.standard_normal(x_small.shape)
ours, cache_ours = decoder_steps_forward(x_small, *params, heads)
our_grads = decoder_steps_backward(dout_small, cache_ours)
layer.zero_grad()
lib_out = layer(x_small)
lib_dx = layer.backward(dout_small)
lib_grads = layer.grads()
names = ["0.norm.weight", "0.norm.bias", "0.fn.weight", "1.norm.weight", "1.norm.bias",
         "1.fn.qkv.weight", "1.fn.to_out.0.weight", "1.fn.to_out.0.bias"]
library_diff = max([np.abs(lib_out - ours).max(), np.abs(lib_dx - our_grads[0]).max()]
                   + [np.abs(lib_grads[n] - g).max() for n, g in zip(names, our_grads[1:])])
print(f"whitebox.nn.DecoderLayer vs our steps: max |diff| = {library_diff:.1e}")

# %% [markdown]
# ## 4. A small CRATE-MAE on MNIST digits
#
# The whole model (`whitebox.models.CRATEMAE`, the official CRATE-MAE):
# patchify the image, replace 75% of the patches by a learned `mask_token`
# (in place: the encoder sees every position), add a fixed sin-cos position
# table, run the encoder layers, then the decoder layers, and predict the
# pixels of every patch. The loss is the mean squared error on the
# **removed** patches only: the network must fill in what it did not see.
# The 5,000 MNIST digits ship with the library's data extra; training is
# `forward`, `backward`, an optimizer step. We compare with the simplest
# guess that uses no visible pixels at all: the training set's mean image.

# %%
(train_x, _), (test_x, _) = load_dataset("mnist5k")
mean, std = float(train_x.mean()), float(train_x.std())      # normalise, as the training job does
steps = 150 if FAST else 1500
mae = CRATEMAE(image_size=28, patch_size=7, dim=64, depth=2, heads=4, decoder_depth=2,
               channels=1, seed=0)
opt = wb.optim.AdamW(mae, lr=5e-3, weight_decay=0.05)
batch_rng = np.random.default_rng(1)
losses = []
for step in range(steps):
    opt.lr = 5e-3 * min(1.0, (step + 1) / 30) * 0.5 * (1 + np.cos(np.pi * step / steps))
    batch = (train_x[batch_rng.integers(0, len(train_x), 128)] - mean) / std
    loss, pred, mask = mae(batch)                                # masks from mae.rng
    mae.zero_grad()
    mae.backward()
    opt.step()
    losses.append(float(loss))

n_eval = 300 if FAST else 1000
eval_x = test_x[:n_eval]
eval_noise = np.random.default_rng(2).random((n_eval, mae.num_patches))
_, test_pred, test_mask = mae((eval_x - mean) / std, noise=eval_noise)
test_pred = test_pred * std + mean                               # back to [0, 1] pixels
target = F.patchify_forward(eval_x, 7)[0]                         # (n, L, 49)


def masked_mse(pred):
    return float((((pred - target) ** 2).mean(-1) * test_mask).sum() / test_mask.sum())


test_mse = masked_mse(test_pred)
baseline = masked_mse(F.patchify_forward(train_x.mean(0, keepdims=True), 7)[0])  # mean image
constant = masked_mse(np.full_like(target, mean))                 # one grey level everywhere
print(f"{steps} steps: train loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f} "
      f"(normalised pixels); held-out masked MSE {test_mse:.4f}, mean image {baseline:.4f}, "
      f"mean grey level {constant:.4f}")

# %%
rec = mae.reconstruct(test_pred, eval_x, test_mask)              # visible patches kept
masked_in = F.unpatchify(target * (1 - test_mask[:, :, None]) + 0.5 * test_mask[:, :, None],
                         eval_x.shape, 7)                           # removed patches grey
fig, axes = plt.subplots(3, 8, figsize=(10, 4))
for j in range(8):
    for row, (img, title) in enumerate(((eval_x, "original"), (masked_in, "masked input"),
                                        (np.clip(rec, 0, 1), "reconstruction"))):
        axes[row, j].imshow(img[j, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, j].set_xticks([])
        axes[row, j].set_yticks([])
        if j == 0:
            axes[row, j].set_ylabel(title, fontsize=8)
fig.suptitle(f"CRATE-MAE, 75% of the patches removed ({steps} steps)")
fig.tight_layout()
save(fig, "05_reconstructions.png")

# %% [markdown]
# In the fast mode (150 steps) the prediction is close to a blurred average
# digit: the model has learned *where* strokes usually are (it beats one grey
# level everywhere) but not yet how to continue the visible ones, so the
# mean image still wins. The mean image is a strong baseline on MNIST (most
# removed patches are background). With the full 1,500 steps the model
# passes it, and longer training (`python -m whitebox.train --task mae`)
# keeps improving: masked autoencoders learn slowly.
#
# ## Summary
#
# - For a mixture of low-rank Gaussians the Bayes denoiser is
#   $\frac{1}{1+t^2}\sum_k \operatorname{softmax}_k(\|U_k^\top x_t\|^2 / 2t^2(1+t^2))\, U_kU_k^\top x_t$:
#   attention over subspaces (checked against importance sampling).
# - Tweedie: $\mathbb{E}[x\mid x_t] = x_t + t^2\nabla\log p_t(x_t)$, so denoising is a
#   step along the score; a compression step $-\nabla R^c$ points nearly the
#   same way when the noise is large, and MSSA approximates that step.
# - The decoder layer runs a CRATE layer backwards:
#   $Y = \text{LN}(X)W^\top$, $\text{out} = Y - \text{MSSA}(\text{LN}(Y))$. In its
#   backward, the subtracted branch receives `-dout`; negating only `dx` is
#   wrong for the parameters, and the gradient check says so.
# - CRATE-MAE = this encoder + this decoder, trained to fill in masked patches.
#
# ## Exercises
#
# 1. **Unequal mixture weights.** With prior probabilities $\pi_k$, the
#    softmax logits gain $\log \pi_k$. Write `weighted_denoiser(xt, U, t, log_prior)`.
# 2. **The decoder without softmax.** The official decoder has an option to
#    drop the softmax (`use_softmax=False`, whitebox `decoder_softmax=False`):
#    $A_k = s\,W_kW_k^\top$ itself. Write `nosoftmax_mssa_forward(x, W_qkv, heads)`
#    returning `(out, cache)` and `nosoftmax_mssa_backward(dout, cache)`
#    returning `(dx, dW_qkv)` for one head group without an output projection
#    (`out = [A_k W_k]_k`); mind the symmetric term.

# %%
def weighted_denoiser(xt, U, t, log_prior):
    """E[x | x_t] when subspace k has prior probability exp(log_prior[k])."""
    ### BEGIN SOLUTION
    proj = np.einsum("kdp,nd->nkp", U, xt)                       # (N, K, p)
    logits = (proj ** 2).sum(-1) / (2 * t ** 2 * (1 + t ** 2)) + log_prior
    back = np.einsum("kdp,nkp->nkd", U, proj)                    # (N, K, d)
    return np.einsum("nk,nkd->nd", softmax(logits, axis=1), back) / (1 + t ** 2)
    ### END SOLUTION


def nosoftmax_mssa_forward(x, W_qkv, heads):
    """out = [s W_k W_k^T W_k]_k with W = x W_qkv^T, s = p^{-1/2}; x (B, N, d)."""
    ### BEGIN SOLUTION
    B, N, _ = x.shape
    w = (x @ W_qkv.T).reshape(B, N, heads, -1).transpose(0, 2, 1, 3)   # (B, K, N, p)
    s = w.shape[-1] ** -0.5
    A = s * w @ w.transpose(0, 1, 3, 2)                                # (B, K, N, N)
    out = (A @ w).transpose(0, 2, 1, 3).reshape(B, N, -1)              # (B, N, K p)
    return out, (x, W_qkv, w, A, s)
    ### END SOLUTION


def nosoftmax_mssa_backward(dout, cache):
    """(dx, dW_qkv) for nosoftmax_mssa_forward."""
    ### BEGIN SOLUTION
    x, W_qkv, w, A, s = cache
    B, K, N, p = w.shape
    dO = dout.reshape(B, N, K, p).transpose(0, 2, 1, 3)                # (B, K, N, p)
    dA = dO @ w.transpose(0, 1, 3, 2)                                  # (B, K, N, N)
    dw = A.transpose(0, 1, 3, 2) @ dO + s * (dA + dA.transpose(0, 1, 3, 2)) @ w
    dw = dw.transpose(0, 2, 1, 3).reshape(B, N, K * p)                 # (B, N, K p)
    return dw @ W_qkv, dw.reshape(-1, K * p).T @ x.reshape(-1, x.shape[-1])
    ### END SOLUTION


# %% [markdown]
# Checks of the exercises (they stay when the solutions are stripped):

# %%
xt_ex = X[:40] + 0.5 * rng.standard_normal((40, d))
uniform = weighted_denoiser(xt_ex, U, 0.5, np.full(K, -np.log(K)))
assert np.allclose(uniform, bayes_denoiser(xt_ex, U, 0.5)), "equal weights must give section 1"
skewed = weighted_denoiser(xt_ex, U, 0.5, np.log([0.98, 0.01, 0.01]))
# the posterior P(k | x_t) from the Gaussian densities themselves, N(x_t; 0, U_k U_k^T + t^2 I)
Sigma_ex = np.einsum("kdp,kep->kde", U, U) + 0.5 ** 2 * np.eye(d)      # (K, d, d)
log_lik = np.stack([-0.5 * (np.linalg.slogdet(S)[1]
                            + np.einsum("nd,nd->n", xt_ex, np.linalg.solve(S, xt_ex.T).T))
                    for S in Sigma_ex], axis=1)                         # (N, K)
posterior = softmax(log_lik + np.log([0.98, 0.01, 0.01]), axis=1)      # (N, K)
means = np.einsum("kdp,kep,ne->nkd", U, U, xt_ex) / (1 + 0.5 ** 2)     # E[x | x_t, k]
check("exercise 1: weighted_denoiser vs the posterior-weighted means", skewed,
      np.einsum("nk,nkd->nd", posterior, means), tol=1e-10)
x_ex, W_ex = rng.standard_normal((2, 5, 6)), 0.5 * rng.standard_normal((6, 6))
out_ex, _ = nosoftmax_mssa_forward(x_ex, W_ex, 2)
lib_ex, _ = F.mssa_variant_forward(x_ex, W_ex, None, None, 2, softmax=False)
assert np.allclose(out_ex, lib_ex), "forward differs from whitebox.functional.mssa_variant_forward"
exercise_errors = check_backward(lambda x, W: nosoftmax_mssa_forward(x, W, 2),
                                 nosoftmax_mssa_backward, [x_ex, W_ex])
print("exercise 2 gradient check:", {i: f"{e:.1e}" for i, e in exercise_errors.items()})

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert mc_rel.max() < 0.06, mc_rel                      # Monte Carlo agrees with the formula
assert tweedie_err < 1e-6, tweedie_err                  # Tweedie = the Bayes denoiser
big, small = table[1.0], table[0.25]
assert big["cos(compression, score)"] > 0.9             # large noise: nearly the same direction
assert big["cos(compression, score)"] > small["cos(compression, score)"]
for t in noise_levels:
    row = table[t]
    assert row["Bayes (MMSE)"] < row["compression, best kappa"] < row["noisy"]
    assert row["MSSA, best kappa"] < row["noisy"] and row["cos(MSSA, score)"] > 0.3
assert max(decoder_errors.values()) < 1e-6, decoder_errors
assert wrong_sign_caught
assert library_diff < 1e-12
assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
assert test_mse < constant, (test_mse, constant)              # it learned where strokes go
if not FAST:
    assert test_mse < baseline, (test_mse, baseline)          # and reads the visible strokes
assert (OUT / "05_reconstructions.png").exists() and (OUT / "05_denoising_steps.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
