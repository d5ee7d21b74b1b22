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
# # 01. The coding rate: how many nats per token does a set of tokens cost?
#
# CRATE is not designed by trial and error: every layer is one step of an
# optimiser climbing a single objective, the **sparse rate reduction**
#
# $$\max_Z \; R(Z) - R^c(Z \mid U) - \lambda \|Z\|_1 .$$
#
# This notebook builds the first two terms from scratch. By the end you will
# know
#
# 1. why a *rate* (an average number of nats per token) measures how spread out
#    a set of tokens is,
#    and why it is a log-determinant;
# 2. how to compute it safely (Cholesky on the smaller Gram matrix);
# 3. its gradient, derived by hand and checked against finite differences;
# 4. how the expansion term $R$, the compression term $R^c$ and their
#    difference $\Delta R$ react when the subspaces holding the data overlap
#    and when noise grows.
#
# Conventions used across whitebox: tokens are **rows**, $Z \in \mathbb{R}^{N
# \times d}$ ($N$ tokens of width $d$). The papers write tokens as columns; every
# formula below is the same after a transpose.

# %%
import math
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import rate
from whitebox.data import subspace_mixture
from whitebox.gradcheck import numerical_gradient, rel_error

rng = np.random.default_rng(0)
t_start = time.time()



# %% [markdown]
# ## 1. Why a rate: packing epsilon-balls
#
# Suppose we must store $N$ vectors $z_i \in \mathbb{R}^d$, but only up to an
# error: any reconstruction within distance $\epsilon$ of the truth is fine
# (*lossy* coding with distortion $\epsilon$). A codebook is then a set of
# centres of $\epsilon$-balls covering the region where the data lives, and
# the cost of a vector is the log of the number of balls needed.
#
# If the data look like a Gaussian with covariance
# $\Sigma = \tfrac1N Z^\top Z$, that region is an ellipsoid with semi-axes
# proportional to $\sqrt{\lambda_i}$ (the eigenvalues of $\Sigma$). Spreading the
# distortion evenly over the $d$ directions gives each direction a noise
# variance $\epsilon^2/d$, and direction $i$ then needs
# $\tfrac12 \log(1 + \lambda_i d / \epsilon^2)$ nats: the log of (signal +
# noise) volume over noise volume. Summing over directions,
#
# $$R(Z) = \sum_i \tfrac12\log\!\Big(1 + \frac{d}{\epsilon^2}\lambda_i\Big)
#        = \tfrac12 \log\det\!\Big(I_d + \frac{d}{N\epsilon^2} Z^\top Z\Big).$$
#
# That is the *coding rate* (Ma et al. 2007; Yu et al. 2020): approximately
# the average number of nats per token (coding all $N$ tokens costs about $N$
# times as much, plus the cost of the codebook). The log-det is the log of a
# volume ratio, which is why it appears: it counts balls.
#
# Two consequences we can check right away:
#
# - **A rate counts dimensions.** For data of rank $r$, only $r$ eigenvalues
#   are non-zero, so as $\epsilon \to 0$, $R \approx r \log(1/\epsilon) + \text{const}$:
#   the slope against $\log(1/\epsilon)$ is the dimension of the data.
# - **It does not care about the basis.** Rotating the features, $Z \mapsto ZQ$,
#   keeps the eigenvalues, hence $R$.

# %%
d, N = 8, 200
eps_grid = np.logspace(-3, 0, 12 if FAST else 40)
slopes = {}
fig, ax = plt.subplots(figsize=(5, 3.5))
for r in (1, 2, 5):
    Z = rng.standard_normal((N, r)) @ rng.standard_normal((r, d)) / math.sqrt(r)  # rank r
    rates = [float(rate.coding_rate(Z, e)) for e in eps_grid]
    slopes[r] = np.polyfit(np.log(1 / eps_grid[:4]), rates[:4], 1)[0]   # small-eps end
    ax.plot(np.log(1 / eps_grid), rates, label=f"rank {r}: slope {slopes[r]:.2f}")
ax.set_xlabel("log(1 / eps)")
ax.set_ylabel("R(Z)  [nats]")
ax.set_title("The coding rate counts dimensions")
ax.legend()
fig.tight_layout()
save(fig, "01_rate_counts_dimensions.png")
print({r: round(float(s), 3) for r, s in slopes.items()})

# %% [markdown]
# The slopes come out at 1, 2 and 5: the rate of low-dimensional data grows
# only as fast as its dimension. That is the whole point: a representation
# that puts each class on its own low-dimensional subspace is *cheap* per
# class and *expensive* as a whole, and the difference is what CRATE maximises.
#
# ## 2. Computing it safely
#
# Never compute `log(det(M))`: for a $384 \times 384$ matrix the determinant
# overflows long before the log is taken (in float32 here; this one overflows
# float64 too, since $\log\det M$ is far above $\log(10^{308}) \approx 709$).
# Instead:
#
# - $M = I + aG$ is symmetric with eigenvalues $\ge 1$, so it has a Cholesky
#   factor $M = LL^\top$ and $\log\det M = 2 \sum_i \log L_{ii}$;
# - $\det(I_d + a Z^\top Z) = \det(I_N + a Z Z^\top)$ (Sylvester), so we factor
#   whichever Gram matrix is smaller: $N \times N$ or $d \times d$.

# %%
Zbig = rng.standard_normal((197, 384)).astype(np.float32)
a_big = 384 / (197 * 0.5 ** 2)
M_big = np.eye(384, dtype=np.float32) + a_big * Zbig.T @ Zbig
with np.errstate(over="ignore"):
    naive = 0.5 * np.log(np.linalg.det(M_big))
safe = float(rate.coding_rate(Zbig, 0.5))
print(f"0.5 log det(M) = {naive}   (overflow)\nCholesky, smaller side = {safe:.3f}")

# %% [markdown]
# ### The forward in small steps
#
# Here is the computation spelled out, each step named so that the backward
# pass can give every variable a `d`-twin.
#
# **Your turn.** Compute, one named step per line (on the $d \times d$ side):
# the scale `a`, the Gram matrix `G` $= Z^\top Z$, `M` $= I_d + aG$, its Cholesky
# factor `L`, and the rate `R` $= \sum_i \log L_{ii}$. Mind that the scale
# holds $\epsilon^2$, not $\epsilon$. The check cell below compares your `R`
# with the library.

# %%
N, d, eps = 6, 10, 0.5
Z = rng.standard_normal((N, d))

### BEGIN SOLUTION
a = d / (N * eps ** 2)                 # the scale of the Gram matrix
G = Z.T @ Z                            # (d, d) Gram matrix (we use the d side here)
M = np.eye(d) + a * G                  # (d, d), symmetric positive definite
L = np.linalg.cholesky(M)              # (d, d) lower triangular, M = L L^T
R = np.log(np.diag(L)).sum()           # 1/2 logdet(M) = sum log diag L
### END SOLUTION

# %%
R_lib = float(rate.coding_rate(Z, eps))    # the library picks the N x N side (N < d)
print(f"step by step: {R:.12f}   whitebox.rate.coding_rate: {R_lib:.12f}")
check("coding rate R, step by step", R, R_lib, tol=1e-10)
check("M = I + a G", M, np.eye(d) + d / (N * eps ** 2) * Z.T @ Z, tol=1e-12)

# %% [markdown]
# ## 3. The gradient, derived
#
# With $R = \tfrac12 \log\det M$ and the identity $d \log\det M = \operatorname{tr}(M^{-1} dM)$:
#
# $$dR = \tfrac12 \operatorname{tr}\big(M^{-1} \, a (dZ^\top Z + Z^\top dZ)\big)
#      = a \operatorname{tr}(M^{-1} Z^\top dZ)
# \quad\Longrightarrow\quad
# \frac{\partial R}{\partial Z} = a\, Z\,(I_d + a Z^\top Z)^{-1}.$$
#
# The same matrix on the token side follows from the *push-through identity*
# $Z (I_d + a Z^\top Z) = (I_N + a Z Z^\top) Z$:
#
# $$\frac{\partial R}{\partial Z} = a\,(I_N + a Z Z^\top)^{-1} Z ,$$
#
# so the backward needs the inverse of the same small matrix the forward
# factored. The library forms that $k \times k$ inverse ($k = \min(N, d)$)
# explicitly: in practice it is as accurate as a linear solve (every eigenvalue
# of $M$ is $\ge 1$, so $M$ is well conditioned) and about as fast, and it
# keeps one code path for NumPy and CuPy.
#
# First, the backward as a reverse walk over the named steps (`dX` means
# $\partial R / \partial X$).
#
# **Your turn.** Starting from `dR = 1`, write the `d`-twins of the forward in
# reverse: `dM` (use $d \tfrac12\log\det M = \tfrac12 \operatorname{tr}(M^{-1} dM)$),
# then `dG`, then `dZ` (careful: $G = Z^\top Z$ uses $Z$ twice). The check
# cell compares your `dZ` with the library and with finite differences.

# %%
dR = 1.0
### BEGIN SOLUTION
dM = dR * 0.5 * np.linalg.inv(M)       # d(1/2 logdet M)/dM = 1/2 M^{-1}  (M symmetric)
dG = a * dM                            # M = I + a G
dZ = Z @ (dG + dG.T)                   # G = Z^T Z  ->  dZ = Z (dG + dG^T)
### END SOLUTION

# %%
check("dZ vs whitebox.rate.coding_rate_grad", dZ, rate.coding_rate_grad(Z, eps), tol=1e-10)
dZ_numeric = numerical_gradient(lambda: rate.coding_rate(Z, eps), Z, np.array(1.0), h=1e-4)
check("dZ vs finite differences", dZ, dZ_numeric, tol=1e-6, floor=1e-3 * np.abs(dZ).max())

# %%
dZ_fused = a * Z @ np.linalg.inv(M)                    # the formula, d side
dZ_tokens = a * np.linalg.solve(np.eye(N) + a * Z @ Z.T, Z)   # the formula, N side
dZ_lib = rate.coding_rate_grad(Z, eps)                 # the library (inverse, smaller side)

print(f"{'comparison':<34}{'max |diff|':>12}")
for name, other in [("reverse walk vs fused (d side)", dZ_fused),
                    ("reverse walk vs push-through (N)", dZ_tokens),
                    ("reverse walk vs whitebox.rate", dZ_lib)]:
    print(f"{name:<34}{np.abs(dZ - other).max():>12.2e}")

# %% [markdown]
# ## 4. Check against finite differences
#
# An analytic gradient is only trusted once it agrees with central
# differences, $\big(R(Z + hE_{ij}) - R(Z - hE_{ij})\big) / 2h$, in float64.
# For a batch of token sets, `coding_rate` returns one rate per item and the
# `*_grad` functions take an upstream weight `dout` per item.
#
# One practical detail: the relative error $|a - n| / (|a| + |n|)$ is taken
# entry by entry, and a gradient entry that happens to be nearly zero (say
# $10^{-6}$) is then compared with the round-off of a difference of two rates of
# size ~10, about $10^{-16} \cdot 10 / h$. So we floor the denominator at a
# thousandth of the gradient's largest entry (`floor=` below), and use
# $h = 10^{-4}$, which balances round-off against the $O(h^2)$ truncation error.

# %%
Zb = rng.standard_normal((3, 7, 5))                    # (B, N, d), here N > d
dout = rng.standard_normal(3)
num = numerical_gradient(lambda: rate.coding_rate(Zb, eps), Zb, dout, h=1e-4)
ana = rate.coding_rate_grad(Zb, eps, dout=dout)
floor = 1e-3 * np.abs(ana).max()
err_R = rel_error(ana, num, floor=floor)
print(f"dR/dZ   relative error vs finite differences: {err_R:.1e}")

# %% [markdown]
# ## 5. Compression against subspaces, and rate reduction
#
# CRATE's compression term measures the cost of the tokens *after projecting
# them onto each of $K$ subspaces* with bases $U_k \in \mathbb{R}^{d \times p}$:
#
# $$R^c(Z \mid U) = \sum_{k=1}^K \tfrac12 \log\det\!\Big(I_p + \frac{p}{N\epsilon^2}
#   (Z U_k)^\top (Z U_k)\Big), \qquad \Delta R = R(Z) - R^c(Z \mid U).$$
#
# Note the scale uses $p$, the dimension each projection lives in. Write
# $W_k = ZU_k$ and $h_k = \tfrac12 \log\det(I_p + b\, W_k^\top W_k)$ with
# $b = p/(N\epsilon^2)$, so that $R^c = \sum_k h_k$. The gradient is the
# coding-rate gradient of each $h_k$, pulled back through the product:
# $\partial R^c/\partial Z = \sum_k (\partial h_k / \partial W_k) U_k^\top$ and
# $\partial R^c / \partial U_k = Z^\top \partial h_k / \partial W_k$, with
# $\partial h_k / \partial W_k = b\, W_k (I_p + b\, W_k^\top W_k)^{-1}$. Two sanity checks: with one subspace spanning everything
# ($K = 1$, $U = I_d$) compression *is* the coding rate, and both gradients
# pass the finite-difference test.

# %%
U = rng.standard_normal((3, 5, 2))                     # (K, d, p)
print("K = 1, U = I:  Rc - R =",
      float(rate.compression_rate(Zb[0], np.eye(5)[None], eps) - rate.coding_rate(Zb[0], eps)))
dZc, dUc = rate.compression_rate_grad(Zb, U, eps, wrt="both", dout=dout)
err_Z = rel_error(dZc, numerical_gradient(lambda: rate.compression_rate(Zb, U, eps),
                                          Zb, dout, h=1e-4), floor=1e-3 * np.abs(dZc).max())
err_U = rel_error(dUc, numerical_gradient(lambda: rate.compression_rate(Zb, U, eps),
                                          U, dout, h=1e-4), floor=1e-3 * np.abs(dUc).max())
print(f"dRc/dZ relative error {err_Z:.1e},  dRc/dU relative error {err_U:.1e}")

# %% [markdown]
# **Your turn.** Write $\partial R^c / \partial Z$ for the single token set
# `Z0 = Zb[0]` (shape $7 \times 5$) and the $K = 3$ bases `U` above, straight
# from the formula: for each $k$, $W_k = Z U_k$,
# $\partial h_k / \partial W_k = b\, W_k (I_p + b\, W_k^\top W_k)^{-1}$, and
# $\partial R^c/\partial Z = \sum_k (\partial h_k / \partial W_k)\, U_k^\top$, with
# $b = p / (N \epsilon^2)$. Call the result `dRc_hand`.

# %%
Z0 = Zb[0]                                             # (N, d) = (7, 5)
### BEGIN SOLUTION
N0, p0 = Z0.shape[0], U.shape[2]
b0 = p0 / (N0 * eps ** 2)
dRc_hand = np.zeros_like(Z0)
for U_k in U:                                          # U_k (d, p)
    W_k = Z0 @ U_k                                     # (N, p)
    dW_k = b0 * W_k @ np.linalg.inv(np.eye(p0) + b0 * W_k.T @ W_k)   # (N, p)
    dRc_hand += dW_k @ U_k.T                           # (N, d)
### END SOLUTION

# %%
check("dRc/dZ by hand vs compression_rate_grad", dRc_hand,
      rate.compression_rate_grad(Z0, U, eps), tol=1e-10)

# %% [markdown]
# ## 6. The data model: a union of subspaces
#
# `whitebox.data.subspace_mixture` samples the model the theory assumes: $K$
# classes, class $k$ a Gaussian on a $p$-dimensional subspace with orthonormal
# basis $U_k$, plus isotropic noise. The `coherence` knob $c$ makes every pair
# of subspaces meet at principal angles of cosine $c$ ($c = 0$: orthogonal,
# $c = 1$: all the same subspace). We put every point on the unit sphere
# (`normalize=True`), as MCR$^2$ does with its features: a rate grows without
# bound with the scale of the data, so comparisons are only fair at a fixed
# scale.
#
# Using the *true* bases, we watch four numbers:
#
# - $R$: the cost of all tokens together (expansion, wants to be large);
# - $R^c$: the cost of their projections on the $K$ subspaces (wants to be small);
# - $\Delta R = R - R^c$;
# - the *labelled* rate reduction of MCR$^2$, where each class (the $N_j$ rows
#   $Z_j$ with label $j$) is compressed on its own,
#   $R - \sum_j \frac{N_j}{2N}\log\det\!\big(I_d + \frac{d}{N_j\epsilon^2} Z_j^\top Z_j\big)$
#   (that is `-mcr2_loss`). Its scale uses the ambient dimension $d$ and the
#   class size $N_j$, unlike the $p/(N\epsilon^2)$ of $R^c$.

# %%
n, eps = (200 if FAST else 600), 0.5
coherences = np.linspace(0.0, 1.0, 6 if FAST else 21)
noises = np.linspace(0.0, 2.0, 6 if FAST else 21)


def rates_on(X, y, U):
    """R, Rc (true bases), Delta R and the labelled MCR^2 rate reduction of one sample."""
    R = float(rate.coding_rate(X, eps))
    Rc = float(rate.compression_rate(X, U, eps))
    return R, Rc, R - Rc, -rate.mcr2_loss(X, y, eps)[0]


# coherence needs a spare block of directions: (K + 1) p <= d
coh_setting = dict(d=32, K=4, p=4, noise=0.1, normalize=True)
by_coherence = np.array([rates_on(*subspace_mixture(n, **coh_setting, rng=1, coherence=c))
                         for c in coherences])          # (points, 4)
# noise on complete orthogonal subspaces, K p = d, as in CRATE
noise_setting = dict(d=32, K=4, p=8, normalize=True)
by_noise = np.array([rates_on(*subspace_mixture(n, **noise_setting, noise=s, rng=1))
                     for s in noises])                  # (points, 4)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, xs, table, label in [(axes[0], coherences, by_coherence, "coherence (cosine of angles)"),
                             (axes[1], noises, by_noise, "noise-to-signal ratio")]:
    for col, name in enumerate(["R", "Rc (true U)", r"$\Delta R$ = R - Rc",
                                "MCR$^2$: R - Rc(labels)"]):
        ax.plot(xs, table[:, col], marker="o", ms=3, label=name)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xlabel(label)
    ax.set_ylabel("nats")
axes[0].set_title("orthogonal -> coherent (d=32, K=4, p=4)")
axes[1].set_title("growing noise (d=32, K=4, p=8, Kp = d)")
axes[0].legend(fontsize=8, loc="lower left")
axes[1].legend(fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.75))  # in the gap
fig.tight_layout()
save(fig, "01_rates_vs_coherence_and_noise.png")
for title, xs, table in [("coherence", coherences, by_coherence), ("noise", noises, by_noise)]:
    print(f"{title:>9}  {'R':>6} {'Rc':>6} {'ΔR':>6} {'MCR2':>6}")
    for x, row in zip(xs, table):
        print(f"{x:9.2f}  " + " ".join(f"{v:6.2f}" for v in row))

# %% [markdown]
# What the curves say:
#
# - **Coherence.** As the subspaces merge, the union spans fewer dimensions
#   ($Kp$ at $c=0$ down to $p$ at $c=1$), so $R$ falls. Meanwhile each
#   projection $ZU_k$ starts to pick up the tokens of *other* classes (their
#   overlap is $c$), so $R^c$ rises. $\Delta R$ falls from large and positive to
#   negative: at $c = 1$ all $K$ projections are the same, so $R^c$ pays for one
#   subspace $K$ times over. Rate reduction rewards representations whose class
#   subspaces are as orthogonal as possible.
# - **Noise.** The labelled rate reduction collapses as noise grows: each
#   class stops being compact. But $R$, $R^c$ and $\Delta R$ against fixed,
#   *complete* orthogonal subspaces ($Kp = d$) barely move. That is not a bug:
#   both rates only see second moments, and a balanced union of $K$ orthogonal
#   subspaces with $Kp = d$ has the same second moments, overall and inside
#   every subspace, as isotropic noise on the sphere. Nothing in $R^c(Z \mid U)$
#   says *which* tokens belong to which subspace. That is why CRATE pairs it
#   with a sparsity term, and why its attention layer computes a soft
#   assignment of tokens to subspaces.

# %% [markdown]
# ## 7. One exact compression step
#
# Gradient descent on $R^c$ alone, $Z \leftarrow Z - \kappa\, \partial R^c / \partial Z$
# (`rate.compression_step`), shrinks each token's projection on every
# subspace, except for the part it has in common with the other tokens of that
# subspace: with complete $U$ it is an anisotropic shrink, weakest along the
# directions many tokens share (tutorial 02 makes this precise). CRATE's attention layer (MSSA, tutorial 02 onwards) is an
# approximation of exactly this step. Here are a few exact steps on noisy data:

# %%
X, y, U_true = subspace_mixture(n, 32, 4, 8, noise=0.5, rng=2)
Rc_path, delta_R_path = [], []
for _ in range(5 if FAST else 20):
    Rc_path.append(float(rate.compression_rate(X, U_true, eps)))
    delta_R_path.append(float(rate.rate_reduction(X, U_true, eps)))
    X = rate.compression_step(X, U_true, eps, kappa=0.5)
print("Rc along exact compression steps:", np.round(Rc_path, 2))

# %% [markdown]
# ## Summary
#
# - $R(Z) = \tfrac12 \log\det(I + \tfrac{d}{N\epsilon^2} Z^\top Z)$ is
#   (approximately) the average number of nats per token to code the tokens up
#   to distortion $\epsilon$: the log of how many $\epsilon$-balls pack the
#   data's ellipsoid. It counts dimensions.
# - Compute it by Cholesky on the smaller Gram side; never `log(det())`.
# - $\partial R / \partial Z = a Z (I + aZ^\top Z)^{-1} = a (I + a ZZ^\top)^{-1} Z$,
#   computed with the inverse of the same small matrix the forward factored.
# - $R^c$ measures the tokens through $K$ subspaces; $\Delta R = R - R^c$ is large
#   when classes sit on orthogonal subspaces and turns negative as they
#   overlap. Against fixed, complete subspaces it barely moves with noise
#   (it sees only second moments); it is the *labelled* MCR$^2$ rate reduction
#   that collapses as the classes drown in noise. An exact gradient step on
#   $R^c$ is what attention approximates.
# - In whitebox, `eps` is the papers' $\epsilon$. The official codes pass
#   $\epsilon^2$ under the name `eps`: use `eps=math.sqrt(their_eps)`.
#
# ## Exercises
#
# 1. Compute the coding rate from the eigenvalues of the Gram matrix,
#    $\tfrac12 \sum_i \log(1 + a \lambda_i)$, and check it against the library.
# 2. Write the gradient of $R^c$ with respect to the basis of a single subspace
#    ($K = 1$) by hand, $\partial R^c / \partial U = a' Z^\top W (I + a' W^\top W)^{-1}$
#    with $W = ZU$ and $a' = p/(N\epsilon^2)$ (the scale of $R^c$, written $b$
#    above), and compare with `compression_rate_grad(..., wrt="U")`.
# 3. Scale the features by $s$: show numerically that for large $s$ and data of
#    rank $r$, $R(sZ) - R(Z) \approx r \log s$.

# %%
# Exercise 1: the rate of Z1 (9 x 6, eps = 0.5) from the eigenvalues; call it R_eig.
Z1 = rng.standard_normal((9, 6))
### BEGIN SOLUTION
a1 = 6 / (9 * 0.5 ** 2)
lam = np.linalg.eigvalsh(Z1.T @ Z1)
R_eig = 0.5 * np.log1p(a1 * lam).sum()
### END SOLUTION

# %%
check("exercise 1: rate from eigenvalues", R_eig, rate.coding_rate(Z1, 0.5), tol=1e-10)

# %%
# Exercise 2: dRc/dU for one subspace U1 (K = 1, d = 6, p = 3); call it dU_hand (d, p).
U1 = rng.standard_normal((1, 6, 3))
### BEGIN SOLUTION
W1 = Z1 @ U1[0]                                        # (N, p)
a_p = 3 / (9 * 0.5 ** 2)
dU_hand = a_p * Z1.T @ W1 @ np.linalg.inv(np.eye(3) + a_p * W1.T @ W1)   # (d, p)
### END SOLUTION

# %%
check("exercise 2: dRc/dU by hand", dU_hand,
      rate.compression_rate_grad(Z1, U1, 0.5, wrt="U")[0], tol=1e-10)

# %%
# Exercise 3: for rank-2 data Zr, gain = R(1000 Zr) - R(Zr), which should be ~ 2 log(1000).
Zr = rng.standard_normal((50, 2)) @ rng.standard_normal((2, 6))          # rank 2
### BEGIN SOLUTION
gain = float(rate.coding_rate(1e3 * Zr, 0.5) - rate.coding_rate(Zr, 0.5))
### END SOLUTION

# %%
check("exercise 3: R(sZ) - R(Z) in units of log s (the rank)", gain / math.log(1e3), 2.0,
      tol=0.01)

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert all(abs(slopes[r] - r) < 0.1 for r in slopes), slopes
assert not np.isfinite(naive) and np.isfinite(safe)
assert abs(R - R_lib) < 1e-10
assert np.abs(dZ - dZ_lib).max() < 1e-10 and np.abs(dZ - dZ_fused).max() < 1e-10
assert np.abs(dZ_tokens - dZ_lib).max() < 1e-10
assert max(err_R, err_Z, err_U) < 1e-7
assert by_coherence[0, 2] > 0 > by_coherence[-1, 2]                     # ΔR changes sign
assert np.all(np.diff(by_coherence[:, 0]) < 0.05) and by_coherence[-1, 0] < by_coherence[0, 0] - 5
assert np.all(np.diff(by_coherence[:, 1]) > 0)                           # Rc rises
X1, _, U1 = subspace_mixture(n, **coh_setting, rng=1, coherence=1.0)
assert abs(by_coherence[-1, 1] - 4 * float(rate.compression_rate(X1, U1[:1], eps))) < 1e-9
assert np.all(np.diff(by_noise[:, 3]) < 0)                               # MCR^2 collapses
assert np.abs(by_noise[:, 2] - by_noise[0, 2]).max() < 0.05 * by_noise[0, 2]  # ΔR blind
assert np.all(np.diff(Rc_path) < 0)
assert (OUT / "01_rates_vs_coherence_and_noise.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
