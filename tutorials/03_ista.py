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
# # 03. ISTA: the sparsifying half of a CRATE layer
#
# The sparse rate reduction objective has a third term, $-\lambda\|Z\|_1$:
# after MSSA has compressed the tokens onto subspaces, the second half of a
# CRATE layer makes them **sparse** against a learned dictionary. It does so
# with one step of ISTA, the iterative shrinkage-thresholding algorithm. In
# this notebook we
#
# 1. state sparse coding as a non-negative LASSO and derive its proximal step,
#    which turns out to be a shifted ReLU;
# 2. run ISTA to convergence on a synthetic dictionary problem;
# 3. derive the single warm-started step CRATE uses, and notice it is *one*
#    matrix product;
# 4. write its backward with `d`-twins and check it;
# 5. assemble a whole CRATE layer from the library's Modules, gradient-check it
#    and look at the sparsity of its output.
#
# Tokens are rows: $X \in \mathbb{R}^{N \times d}$, codes $Z \in \mathbb{R}^{N \times m}$,
# dictionary $D \in \mathbb{R}^{d \times m}$ (CRATE: $m = d$).

# %%
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import functional as F
from whitebox import nn
from whitebox.gradcheck import GradientCheckError, check_backward, check_module
from whitebox.models import CRATE

rng = np.random.default_rng(0)
t_start = time.time()



# %% [markdown]
# ## 1. Sparse coding as a non-negative LASSO
#
# Explain each token $x_i$ as a non-negative combination of few dictionary
# atoms (columns of $D$):
#
# $$\min_{Z \ge 0}\; F(Z) = \underbrace{\tfrac12 \|X - Z D^\top\|_F^2}_{f(Z)\text{: smooth}}
#   \;+\; \underbrace{\lambda \|Z\|_1 + \iota(Z \ge 0)}_{g(Z)\text{: not smooth}},$$
#
# where $\iota(Z \ge 0)$ is $0$ on the non-negative orthant and $+\infty$ off it.
# Every token is its own problem (rows do not interact). On $Z \ge 0$ the
# $\ell_1$ norm is linear, $\|Z\|_1 = \sum_{ij} Z_{ij}$, so this is a convex
# quadratic program; the non-negativity is what will make the answer a ReLU.
#
# **Proximal gradient.** Take a gradient step on $f$, then solve the
# non-smooth part exactly:
#
# $$Z^{t+1} = \operatorname{prox}_{\eta g}\big(Z^t - \eta \nabla f(Z^t)\big),\qquad
#   \nabla f(Z) = (Z D^\top - X)\, D,\qquad
#   \operatorname{prox}_{\eta g}(V) = \arg\min_Z \tfrac12\|Z - V\|^2 + \eta\, g(Z).$$
#
# **The prox is a shifted ReLU.** The problem separates into scalars:
# $\min_{z \ge 0} \tfrac12 (z - v)^2 + \eta\lambda z$. For $z > 0$ the
# derivative $z - v + \eta\lambda$ vanishes at $z = v - \eta\lambda$, which is
# admissible only if $v > \eta\lambda$; otherwise the objective is increasing on
# $z \ge 0$ and the minimum sits on the boundary $z = 0$. Together:
#
# $$\operatorname{prox}_{\eta g}(v) = \max(v - \eta\lambda,\, 0) = \operatorname{ReLU}(v - \eta\lambda).$$
#
# Without the constraint it would be the two-sided soft threshold
# $\operatorname{sign}(v)\max(|v| - \eta\lambda, 0)$. Let's check by brute force:
# minimise the scalar objective on a fine grid for many $v$.

# %%
eta, lam = 0.1, 0.1                                  # the official constants
v = np.linspace(-1.0, 1.0, 41)
z_grid = np.linspace(0.0, 2.0, 200_001)              # candidate z >= 0, step 1e-5
prox_brute, prox_err = {}, 0.0
for threshold in (eta * lam, 0.3):                   # the official eta lambda, and a visible one
    objective = (0.5 * (z_grid[None, :] - v[:, None]) ** 2
                 + threshold * z_grid[None, :])              # (41, grid)
    prox_brute[threshold] = z_grid[np.argmin(objective, axis=1)]                      # (41,)
    prox_err = max(prox_err, np.abs(prox_brute[threshold] - np.maximum(v - threshold, 0)).max())
print(f"max |brute-force prox - ReLU(v - eta lambda)| = {prox_err:.1e}  (grid step 1e-5)")

# %% [markdown]
# ## 2. ISTA on a synthetic dictionary problem
#
# We plant a sparse non-negative code: $d = m = 64$ atoms with unit norm, each
# token uses $k = 4$ of them with weights in $[0.5, 1.5]$, plus a little noise.
# Two dictionaries: a **random** Gaussian one (badly conditioned) and a
# **near-identity** one, $D = I + $ small noise (the regime where CRATE's warm
# start will make sense). With $L = \|D\|_2^2$, the Lipschitz constant of
# $\nabla f$, ISTA converges for any step $\eta < 2/L$; the standard choice
# $\eta = 1/L$, used here, guarantees that the objective decreases monotonically.

# %%
d = m = 64
n_tokens, k_active = (128 if FAST else 512), 4
n_iter = 150 if FAST else 500


def plant_codes(n, m, k, rng):
    """n sparse non-negative codes with k active atoms each, weights in [0.5, 1.5]."""
    Z = np.zeros((n, m))
    for i in range(n):
        Z[i, rng.choice(m, size=k, replace=False)] = rng.uniform(0.5, 1.5, size=k)
    return Z


def lasso_objective(Z, X, D, lam):
    """1/2 ||X - Z D^T||^2 + lam ||Z||_1, averaged over tokens (Z >= 0 assumed)."""
    return float(0.5 * ((X - Z @ D.T) ** 2).sum() / len(X) + lam * np.abs(Z).sum() / len(X))


def ista_step(Z, X, D, eta, lam):
    """Z <- ReLU(Z - eta (Z D^T - X) D - eta lam): one proximal gradient step."""
    return np.maximum(Z - eta * (Z @ D.T - X) @ D - eta * lam, 0.0)


dictionaries = {"random": rng.standard_normal((d, m)),
                "near-identity": np.eye(d, m) + 0.3 * rng.standard_normal((d, m)) / np.sqrt(d)}
problems = {}
for name, D in dictionaries.items():
    D = D / np.linalg.norm(D, axis=0)                        # unit-norm atoms
    Z_true = plant_codes(n_tokens, m, k_active, rng)         # (n, m)
    X = Z_true @ D.T + 0.01 * rng.standard_normal((n_tokens, d))   # (n, d)
    L = np.linalg.norm(D, 2) ** 2
    Z = np.zeros((n_tokens, m))
    history, nonzero = [], []
    for _ in range(n_iter):
        Z = ista_step(Z, X, D, 1.0 / L, lam)
        history.append(lasso_objective(Z, X, D, lam))
        nonzero.append(float((Z > 0).mean()))
    grad = (Z @ D.T - X) @ D + lam                           # gradient of the smooth + linear part
    problems[name] = dict(D=D, X=X, Z_true=Z_true, Z=Z, L=L, history=np.array(history),
                          nonzero=np.array(nonzero),
                          kkt_on=float(np.abs(grad[Z > 0]).max()),
                          kkt_off=float(grad[Z == 0].min()),
                          support=float(((Z > 1e-3) == (Z_true > 0)).mean()))
    print(f"{name:>14}: L = {L:5.2f}, cond(D) = {np.linalg.cond(D):6.1f}, "
          f"final objective {history[-1]:.5f}, non-zeros {nonzero[-1]:.4f} "
          f"(planted {k_active / m:.4f}), support recovered {problems[name]['support']:.4f}")

# %% [markdown]
# Is the last iterate really the minimiser? For a convex problem the KKT
# conditions decide it: with $\Gamma = (ZD^\top - X)D + \lambda$ (the gradient
# of $f + \lambda \sum Z$), every active entry needs $\Gamma_{ij} = 0$ and every
# zero entry $\Gamma_{ij} \ge 0$ (pushing it positive would not help).

# %%
for name, pr in problems.items():
    print(f"{name:>14}: max |Gamma| on the support = {pr['kkt_on']:.1e}, "
          f"min Gamma off the support = {pr['kkt_off']:+.1e}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
axes[0].plot(v, v, color="gray", lw=0.8, ls=":", label="identity")
axes[0].plot(v, np.sign(v) * np.maximum(np.abs(v) - 0.3, 0), label="soft threshold (no z >= 0)")
axes[0].plot(v, np.maximum(v - 0.3, 0), lw=2, label="ReLU(v - eta lambda)")
axes[0].plot(v[::2], prox_brute[0.3][::2], "k.", ms=4, label="brute-force minimiser")
axes[0].set_xlabel("v")
axes[0].set_ylabel("prox(v)")
axes[0].set_title("The prox (drawn with eta lambda = 0.3)")
axes[0].legend(fontsize=8)
for name, pr in problems.items():
    F_star = pr["history"].min()
    axes[1].semilogy(np.maximum(pr["history"] - F_star, 1e-16), label=name)
    axes[2].plot(np.arange(1, n_iter + 1), pr["nonzero"], label=name)   # iterations 1..n
axes[1].set_xlabel("ISTA iteration")
axes[1].set_ylabel("F(Z_t) - F*")
axes[1].set_title("Convergence from Z = 0 (eta = 1/L)")
axes[1].legend()
axes[2].axhline(k_active / m, color="gray", ls="--", lw=0.8, label="planted")
axes[2].set_xscale("log")
axes[2].set_xlabel("ISTA iteration")
axes[2].set_ylabel("fraction of non-zero codes")
axes[2].set_title("Sparsity along the iterations")
axes[2].legend()
fig.tight_layout()
save(fig, "03_ista_convergence.png")

# %% [markdown]
# Both converge linearly once the support is found (the non-negative LASSO is
# strongly convex on it), the ill-conditioned random dictionary much more
# slowly. The iterates start dense-ish, then the threshold prunes them down to
# the planted sparsity, and the planted support is recovered.
#
# ## 3. The single step CRATE takes
#
# A network cannot afford hundreds of iterations per layer. CRATE takes
# **one** step, warm-started at the input: $Z^0 = X$ (with a square
# dictionary, $m = d$, so codes and tokens live in the same space). With
# $Z^0 = X$ the gradient step is $X - \eta (X D^\top - X) D$, hence
#
# $$Z^{1} = \operatorname{ReLU}\big(X + \eta\,(X D - X D^\top D) - \eta\lambda\big),$$
#
# with the dictionary $D$ stored as the layer's weight $W$, $\eta = 0.1$ and
# $\lambda = 0.1$ in the official code. (The book, Ma-Lab-Berkeley's open
# *Learning Deep Representations of Data Distributions*
# (deep-representation-learning-book), chapter 7, prints $+\eta\lambda$ inside the
# ReLU. That is a sign typo: $+\eta\lambda$ would be the prox of $-\lambda\|Z\|_1$,
# a reward for density; the code subtracts.)
#
# How good is one step? It depends on whether $X$ is already a sensible
# code, which is what the warm start bets on.

# %%
one_step = {}
for name, pr in problems.items():
    D, X = pr["D"], pr["X"]
    F_star = pr["history"].min()
    row = {"optimum": F_star}
    for eta_name, eta_i in (("1/L", 1.0 / pr["L"]), ("0.1", 0.1)):
        row[f"from X, eta={eta_name}"] = lasso_objective(ista_step(X, X, D, eta_i, lam), X, D, lam)
        row[f"from 0, eta={eta_name}"] = lasso_objective(
            ista_step(np.zeros_like(X), X, D, eta_i, lam), X, D, lam)
    one_step[name] = row
print(f"{'objective after one step':<26}" + "".join(f"{name:>16}" for name in one_step))
for key in one_step["random"]:
    print(f"{key:<26}" + "".join(f"{one_step[name][key]:16.4f}" for name in one_step))

# %% [markdown]
# Read the table row by row. With the near-identity dictionary, one
# warm-started step with $\eta = 1/L$ (`from X, eta=1/L`) lands close to the
# optimum, while one step from zero is far from it. With the official
# $\eta = 0.1$, smaller than $1/L$ here, one step moves less: `from X, eta=0.1`
# is clearly above the optimum, though still far below `from 0, eta=0.1`.
# With the random dictionary the warm start is *worse* than starting from
# zero, at both step sizes (`from X` above `from 0`): $X$ is simply not a
# code for that dictionary. A CRATE layer learns its
# dictionary *and* the features that feed it, and the warm start builds in the
# assumption that the two agree.
#
# ### The pre-activation is linear in X
#
# Everything inside the ReLU except the constant is linear in $X$:
#
# $$X + \eta (X W - X W^\top W) = X M, \qquad M = I + \eta\,(W - W^\top W).$$
#
# The official code computes three token-sized products per call ($XW$, then
# $XW^\top$, then its product with $W$); forming the $d \times d$ matrix $M$
# once costs one $d^3$ product, and then *one* token-sized product remains. For
# $BN \gg d$ tokens that is close to three times fewer flops. (We keep the
# tokens as a 2-D array of rows, $(BN, d)$: NumPy's broadcast product of a
# 3-D array with a matrix can be many times slower than the same product on
# the flattened rows, which is why the library multiplies flattened rows.)

# %%
def three_products(x, W):
    return x + eta * (x @ W - (x @ W.T) @ W) - eta * lam


def one_product(x, W):
    M = np.eye(W.shape[0]) + eta * (W - W.T @ W)             # (d, d), once per call
    return x @ M - eta * lam


W = rng.uniform(-np.sqrt(6 / 384), np.sqrt(6 / 384), size=(384, 384))   # kaiming_uniform
x = rng.standard_normal((64 * 65, 384))                                   # (B N, d) token rows
linear_diff = np.abs(three_products(x, W) - one_product(x, W)).max()
timings = {}
for fn in (three_products, one_product):
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn(x, W)
        runs.append(time.perf_counter() - t0)
    timings[fn.__name__] = 1e3 * min(runs)
print(f"max |three products - one product| = {linear_diff:.1e}")
print(f"best of 5: three products {timings['three_products']:.1f} ms, M then one product "
      f"{timings['one_product']:.1f} ms  (B N = {len(x)} tokens, d = 384)")

# %% [markdown]
# ## 4. Forward in small steps, backward with `d`-twins
#
# $$M = I + \eta(W - W^\top W),\quad A = XM - \eta\lambda,\quad Y = \operatorname{ReLU}(A).$$
#
# Backward, for upstream gradient `dY` (rows of all tokens stacked, so
# products over tokens sum over the batch):
#
# - ReLU: `dA = dY * (A > 0)`.
# - $A = XM - \eta\lambda$: `dX = dA M^T`, `dM = X^T dA` (a $d \times d$ matrix).
# - $M = I + \eta W - \eta W^\top W$: the linear term gives $\eta\, dM$. For the
#   quadratic term, $\langle dM, W^\top W\rangle$ changes by
#   $\langle dM, \delta W^\top W + W^\top \delta W\rangle
#   = \langle W (dM^\top + dM), \delta W \rangle$, so
#
# $$dW = \eta\, dM - \eta\, W (dM + dM^\top).$$
#
# Written out with $M^\top = I + \eta (W^\top - W^\top W)$, `dX` is
# $dA + \eta\, dA\, W^\top - \eta\, dA\, W^\top W$, the form the three official products give.
#
# **Your turn.** Write the forward (`M`, `A`, `y`) and the backward (`dA`, `dx`,
# `dM`, `dW`) below. The checks that follow compare both with
# `whitebox.functional.ista_forward` / `ista_backward` and the backward with
# finite differences.

# %%
def ista_steps_forward(x, W, eta=0.1, lam=0.1):
    """One warm-started ISTA step on x (..., d), in named steps. Returns y, cache."""
    d = W.shape[0]
    ### BEGIN SOLUTION
    M = np.eye(d) + eta * (W - W.T @ W)                      # (d, d)
    A = x @ M - eta * lam                                    # (..., d) pre-activation
    y = np.maximum(A, 0.0)                                   # (..., d)
    ### END SOLUTION
    return y, dict(x=x, W=W, M=M, A=A, eta=eta)


# %%
x_small = rng.standard_normal((2, 5, 6))                     # (B, N, d)
W_small = rng.uniform(-1, 1, size=(6, 6))
check("ISTA forward y vs whitebox.functional.ista_forward",
      ista_steps_forward(x_small, W_small)[0],
      F.ista_forward(x_small, W_small, eta=0.1, lam=0.1)[0], tol=1e-12)


# %%
def ista_steps_backward(dy, cache):
    """(dx, dW) for one ISTA step."""
    x, W, M, A, eta = (cache[k] for k in ("x", "W", "M", "A", "eta"))
    d = W.shape[0]
    ### BEGIN SOLUTION
    dA = dy * (A > 0)                                        # (..., d)
    dx = dA @ M.T                                            # (..., d)
    dM = x.reshape(-1, d).T @ dA.reshape(-1, d)              # (d, d), summed over tokens
    dW = eta * dM - eta * W @ (dM + dM.T)                    # (d, d)
    ### END SOLUTION
    return dx, dW


# %%
y_small, cache_small = ista_steps_forward(x_small, W_small)
print(f"y {y_small.shape}, fraction of zeros {np.mean(y_small == 0):.2f}, "
      f"closest pre-activation to the kink: {np.abs(cache_small['A']).min():.1e}")

# %% [markdown]
# The gradient check perturbs entries by $h = 10^{-5}$, so no pre-activation
# may sit within $h$ of the ReLU's kink at 0 (printed above: far enough).

# %%
dy_small = rng.standard_normal(y_small.shape)
grads_steps = ista_steps_backward(dy_small, cache_small)
y_fn, cache_fn = F.ista_forward(x_small, W_small, eta=0.1, lam=0.1)
grads_fn = F.ista_backward(dy_small, cache_fn)
check("ISTA backward dx vs whitebox.functional.ista_backward", grads_steps[0], grads_fn[0],
      tol=1e-12)
check("ISTA backward dW vs whitebox.functional.ista_backward", grads_steps[1], grads_fn[1],
      tol=1e-12)
ista_errors = check_backward(ista_steps_forward, ista_steps_backward, [x_small, W_small])
print("relative errors vs finite differences:",
      {name: f"{ista_errors[i]:.1e}" for i, name in enumerate(["x", "W"])})
assert max(ista_errors.values()) < 1e-7, f"ISTA backward vs finite differences: {ista_errors}"
ista_lib_diff = max(np.abs(y_fn - y_small).max(),
                    *(np.abs(a - b).max() for a, b in zip(grads_fn, grads_steps)))
print(f"whitebox.functional.ista_forward/backward vs step by step: "
      f"max |diff| = {ista_lib_diff:.1e}")

# %% [markdown]
# ## 5. One whole CRATE layer
#
# A layer is compression, then sparsification, each behind a LayerNorm:
#
# $$Z^{\ell+1/2} = Z^\ell + \text{MSSA}(\text{LN}_1(Z^\ell)), \qquad
#   Z^{\ell+1} = \text{ISTA}(\text{LN}_2(Z^{\ell+1/2})).$$
#
# Note the residual around MSSA and *none* around ISTA. The library's
# `PreNorm(dim, fn)` is "LayerNorm, then fn", and a CRATE model keeps each
# layer as the pair `model.transformer.layers[i] = [PreNorm(MSSA), PreNorm(ISTA)]`
# (a `whitebox.nn.CRATELayer`). Here is that layer written out as a Module of
# our own, with its backward as the reverse walk: the residual's two branches
# add their gradients.

# %%
class OurCRATELayer(nn.Module):
    """Z -> ISTA(LN2(Z + MSSA(LN1(Z)))), from a PreNorm(MSSA) and a PreNorm(ISTA)."""

    def __init__(self, attn, ista, dtype="float64"):
        super().__init__(dtype)
        self.attn = attn                                     # PreNorm(MSSA)
        self.ista = ista                                     # PreNorm(ISTA)

    def forward(self, z):
        self._cache = True
        ### BEGIN SOLUTION
        z_half = z + self.attn(z)                            # compression, with a residual
        return self.ista(z_half)                             # sparsification, no residual
        ### END SOLUTION

    def backward(self, dout):
        self._take_cache()
        ### BEGIN SOLUTION
        dz_half = self.ista.backward(dout)
        return dz_half + self.attn.backward(dz_half)         # residual + MSSA branch
        ### END SOLUTION


model = CRATE(image_size=8, patch_size=4, num_classes=3, dim=16, depth=2, heads=2, dim_head=8,
              channels=1, dtype="float64", seed=0)
images = rng.standard_normal((2, 1, 8, 8))
model.forward(images, capture=True)
layer = OurCRATELayer(*model.transformer.layers[1])             # the model's second layer
z1, z2 = model.captured["z"]                                 # Z^1 and Z^2, (B, N, d)
layer_diff = np.abs(layer(z1) - z2).max()
assert np.abs(model.transformer.layers[1](z1) - z2).max() == 0   # the library's own layer
print(f"our layer on Z^1 vs the model's Z^2: max |diff| = {layer_diff:.1e}")
check("our CRATE layer on Z^1 vs the model's Z^2", layer(z1), z2, tol=1e-12)

# %% [markdown]
# `whitebox.gradcheck.check_module` checks the input gradient and every
# parameter gradient of the layer (two LayerNorms, `qkv`, `to_out`, the
# dictionary) against central differences in float64. One numerical detail:
# the checked scalar is $L = \sum_{ij} \text{out}_{ij}\, \text{dout}_{ij}$ over
# all outputs, and a central difference carries a round-off noise of about
# $10^{-16} |L| / h \approx 10^{-10}$. A gradient entry of size $10^{-4}$ then
# shows a relative error near $10^{-6}$ that has nothing to do with the
# backward, so entries below `floor` $= 10^{-3}$ are judged by their absolute
# error instead. We also make sure no ISTA pre-activation sits within $h$ of
# the ReLU's kink.

# %%
W_dict = layer.ista.fn.param("weight")
M_dict = np.eye(W_dict.shape[0]) + 0.1 * (W_dict - W_dict.T @ W_dict)        # (d, d)
pre_activation = layer.ista.norm(z1 + layer.attn(z1)) @ M_dict - 0.1 * 0.1   # (B, N, d)
print(f"closest ISTA pre-activation to the kink: {np.abs(pre_activation).min():.1e}")
layer_errors = check_module(layer, [z1.copy()], tol=1e-6, floor=1e-3)
for name, err in layer_errors.items():
    print(f"{name:<24} relative error {err:.1e}")

# %% [markdown]
# ### Sparsity of the layer's output
#
# The official visualisations plot the fraction of non-zeros at the ISTA
# output per layer (the official repository's `vis_utils`). At initialisation the dictionary
# is random, so the layer is "sparse" only through the ReLU's threshold
# $\eta\lambda$. Sweep $\lambda$ on a wider layer and measure it; also try the
# book's $+\eta\lambda$ sign (chapter 7 of the open book cited in section 3)
# to see that it makes the output *denser* than no threshold at all.

# %%
wide = CRATE(image_size=16, patch_size=4, num_classes=3, dim=96, depth=1, heads=4, dim_head=24,
             channels=1, dtype="float64", seed=1)
wide.forward(rng.standard_normal((8, 1, 16, 16)), capture=True)
ista_in = wide.captured["ista_in"][0]                        # LN2(Z^{1/2}), (B, N, d)
W_wide = wide.transformer.layers[0][1].fn.param("weight")
lams = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
nonzero_vs_lam = np.array([np.mean(F.ista_forward(ista_in, W_wide, 0.1, lam_i)[0] > 0)
                           for lam_i in lams])
nonzero_typo = float(np.mean(F.ista_forward(ista_in, W_wide, 0.1, -0.1)[0] > 0))  # +eta lambda
nonzero_official = float(np.mean(wide.captured["z"][0] > 0))
for lam_i, nz in zip(lams, nonzero_vs_lam):
    print(f"lambda = {lam_i:3.1f}: fraction of non-zeros {nz:.3f}")
print(f"the book's sign (+eta lambda, lambda = 0.1): {nonzero_typo:.3f};  "
      f"the model's own layer (lambda = 0.1): {nonzero_official:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
axes[0].plot(lams, nonzero_vs_lam, marker="o", label="official sign: ReLU(... - eta lambda)")
axes[0].axhline(nonzero_typo, color="tab:red", ls=":",
                label="open book ch. 7 sign: + eta lambda (lambda = 0.1)")
axes[0].set_xlabel("lambda (eta = 0.1)")
axes[0].set_ylabel("fraction of non-zeros at the ISTA output")
axes[0].set_title("Sparsity of a CRATE layer at initialisation")
axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8)   # below: hides nothing
axes[1].hist(wide.captured["z"][0].ravel(), bins=60, color="tab:blue")
axes[1].set_yscale("log")
axes[1].set_xlabel("ISTA output value")
axes[1].set_ylabel("count")
axes[1].set_title(f"Output of the layer: {1 - nonzero_official:.0%} exact zeros")
fig.tight_layout()
save(fig, "03_layer_sparsity.png")

# %% [markdown]
# About half the entries are exact zeros at initialisation (a ReLU of
# roughly symmetric pre-activations), and $\lambda$ controls the rest. Training
# shapes the dictionary so that far fewer entries survive: the paper reports
# the non-zero fraction falling to about 0.2 in the last layers of CRATE-S.
#
# ## Summary
#
# - Sparse coding with non-negative codes is a LASSO whose proximal step is
#   $\operatorname{ReLU}(v - \eta\lambda)$: the ReLU *is* the prox of
#   $\lambda\|z\|_1 + \iota(z \ge 0)$.
# - ISTA alternates a gradient step on $\tfrac12\|X - ZD^\top\|^2$ with that ReLU
#   and converges to the LASSO solution (checked by the KKT conditions).
# - CRATE takes one step from $Z^0 = X$:
#   $\operatorname{ReLU}(X + \eta(XW - XW^\top W) - \eta\lambda)$, $\eta = \lambda = 0.1$,
#   minus (not plus) $\eta\lambda$. It is one product with
#   $M = I + \eta(W - W^\top W)$.
# - Backward: `dA = dY [A > 0]`, `dX = dA M^T`, `dM = X^T dA`,
#   `dW = eta dM - eta W (dM + dM^T)`.
# - A CRATE layer is $Z + \text{MSSA}(\text{LN}(Z))$ followed by
#   $\text{ISTA}(\text{LN}(\cdot))$, with no residual around ISTA.
#
# ## Exercises
#
# 1. **FISTA.** Add Nesterov momentum to ISTA
#    ($Y^{t} = Z^t + \tfrac{t - 1}{t + 2}(Z^t - Z^{t-1})$, prox step taken from
#    $Y^t$) and compare the iterations needed to reach $F - F^* < 10^{-8}$ on the
#    random dictionary.
# 2. **A tempting mistake.** Replace `dM + dM.T` in `ista_steps_backward` by
#    `2 * dM`. Show that the gradient check fails, and explain why it would
#    pass if `dM` happened to be symmetric.
# 3. **More steps per layer.** Unroll $T$ warm-started ISTA steps with the
#    official $\eta = 0.1$ on the near-identity problem and report the LASSO
#    objective after $T = 1, 2, 5, 20$.

# %%
# Exercise 1: fista_hist, the LASSO objective after each of n_iter FISTA steps (eta = 1/L).
pr = problems["random"]
D, X, L = pr["D"], pr["X"], pr["L"]
F_star = pr["history"].min()
### BEGIN SOLUTION
Z_prev = Z_cur = np.zeros((n_tokens, m))
fista_hist = []
for t in range(1, n_iter + 1):
    Y = Z_cur + (t - 1) / (t + 2) * (Z_cur - Z_prev)
    Z_prev, Z_cur = Z_cur, ista_step(Y, X, D, 1.0 / L, lam)
    fista_hist.append(lasso_objective(Z_cur, X, D, lam))
### END SOLUTION

# %%
F_star = min(F_star, min(fista_hist))


def iterations_to(hist, tol=1e-8):
    below = np.nonzero(np.asarray(hist) - F_star < tol)[0]
    return int(below[0]) + 1 if below.size else None


print(f"iterations to F - F* < 1e-8: ISTA {iterations_to(pr['history'])}, "
      f"FISTA {iterations_to(fista_hist)}")
assert len(fista_hist) == n_iter, f"exercise 1: {len(fista_hist)} objectives, expected {n_iter}"
assert iterations_to(fista_hist) is not None, \
    f"exercise 1: FISTA never reached F - F* < 1e-8 (best gap {min(fista_hist) - F_star:.2e})"
if iterations_to(pr["history"]) is not None:
    assert iterations_to(fista_hist) < iterations_to(pr["history"]), \
        "exercise 1: FISTA should need fewer iterations than ISTA"


# %%
# Exercise 2: ista_wrong_backward, the backward with 2 dM in place of dM + dM^T.
### BEGIN SOLUTION
# 2 dM assumes dM = dM^T; X^T dA is not symmetric in general.
def ista_wrong_backward(dy, cache):
    dx, _ = ista_steps_backward(dy, cache)
    dA = dy * (cache["A"] > 0)
    d = cache["W"].shape[0]
    dM = cache["x"].reshape(-1, d).T @ dA.reshape(-1, d)
    return dx, cache["eta"] * dM - cache["eta"] * 2 * cache["W"] @ dM
### END SOLUTION


# %%
try:
    check_backward(ista_steps_forward, ista_wrong_backward, [x_small, W_small])
    wrong_ista_caught = False
except GradientCheckError as err:
    wrong_ista_caught = True
    print("2 dM instead of dM + dM^T:", err)
assert wrong_ista_caught, "exercise 2: the backward with 2 dM passed the gradient check"

# %%
# Exercise 3: objective_T[T], the LASSO objective after T = 1, 2, 5, 20 warm-started steps.
pr = problems["near-identity"]
### BEGIN SOLUTION
Z_T, objective_T = pr["X"].copy(), {}
for t in range(1, 21):
    Z_T = ista_step(Z_T, pr["X"], pr["D"], 0.1, lam)
    if t in (1, 2, 5, 20):
        objective_T[t] = lasso_objective(Z_T, pr["X"], pr["D"], lam)
### END SOLUTION

# %%
print("objective after T steps (eta = 0.1):", {t: round(v, 4) for t, v in objective_T.items()},
      f" optimum {pr['history'].min():.4f}")
Z_check = pr["X"].copy()
for _ in range(5):
    Z_check = ista_step(Z_check, pr["X"], pr["D"], 0.1, lam)
check("exercise 3: objective after T = 5 steps", objective_T[5],
      lasso_objective(Z_check, pr["X"], pr["D"], lam), tol=1e-10)
assert objective_T[20] < objective_T[5] < objective_T[1], \
    f"exercise 3: the objective must fall with T, got {objective_T}"

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert prox_err < 2e-5
for name, pr in problems.items():
    assert pr["kkt_on"] < 1e-6 and pr["kkt_off"] > -1e-6, name       # converged: KKT hold
    assert pr["support"] > 0.99, name                                 # planted support found
    assert abs(pr["nonzero"][-1] - k_active / m) < 0.01, name
    assert pr["nonzero"][0] > pr["nonzero"][-1], name                 # pruning happened
    assert np.all(np.diff(pr["history"]) < 1e-12), name               # monotone descent
near, rand_d = one_step["near-identity"], one_step["random"]
assert near["from X, eta=1/L"] < 1.1 * near["optimum"]
assert near["from X, eta=0.1"] < near["from 0, eta=0.1"]
assert 0.1 < 1 / problems["near-identity"]["L"]
assert near["from X, eta=0.1"] > 1.2 * near["optimum"]           # official eta: clearly above
assert near["from X, eta=0.1"] < 0.5 * near["from 0, eta=0.1"]   # ...far below from zero
assert rand_d["from X, eta=1/L"] > rand_d["from 0, eta=1/L"]     # random D: warm start worse
assert rand_d["from X, eta=0.1"] > rand_d["from 0, eta=0.1"]
assert linear_diff < 1e-10
assert max(ista_errors.values()) < 1e-7
assert ista_lib_diff < 1e-12
assert layer_diff < 1e-12
assert np.abs(pre_activation).min() > 1e-4
assert max(layer_errors.values()) < 1e-6, layer_errors
assert np.all(np.diff(nonzero_vs_lam) < 0) and nonzero_typo > nonzero_vs_lam[0]
assert 0.3 < nonzero_official < 0.7
assert (OUT / "03_ista_convergence.png").exists() and (OUT / "03_layer_sparsity.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
