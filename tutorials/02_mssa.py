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
# # 02. From the gradient of $R^c$ to multi-head subspace self-attention
#
# Tutorial 01 ended with one exact gradient step on the compression term,
#
# $$Z^+ = Z - \kappa\, \frac{\partial R^c(Z \mid U)}{\partial Z}.$$
#
# CRATE's attention layer, MSSA, is *this step*, approximated three times
# until it is cheap and looks like self-attention. In this notebook we
#
# 1. write the exact step in a form where the approximations are visible;
# 2. make the three approximations one at a time and **measure** on data how
#    far each one moves the step;
# 3. write MSSA's forward in small named steps, derive its backward by hand
#    (including a term that is easy to forget), and check it against finite
#    differences;
# 4. see that the library computes the same thing, and where the official
#    code departs from the derivation.
#
# Tokens are rows: $Z \in \mathbb{R}^{N \times d}$, subspace bases
# $U_k \in \mathbb{R}^{d \times p}$, $k = 1..K$.

# %%
import time

from whitebox.notebook import FAST, OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import functional as F
from whitebox import nn, rate
from whitebox.data import subspace_mixture
from whitebox.gradcheck import GradientCheckError, check_backward, numerical_gradient

rng = np.random.default_rng(0)
t_start = time.time()



# %% [markdown]
# ## 1. The exact step, rewritten
#
# With $W_k = Z U_k$ (the tokens seen through subspace $k$, shape $N \times p$)
# and $b = p / (N \epsilon^2)$, tutorial 01 derived
#
# $$\frac{\partial R^c}{\partial Z} = b \sum_k (I_N + b\, W_k W_k^\top)^{-1} W_k\, U_k^\top .$$
#
# The $N \times N$ matrix $G_k = W_k W_k^\top$ is a token-token Gram matrix:
# entry $(i, j)$ says how similar tokens $i$ and $j$ look *inside subspace $k$*.
# Split the inverse with the identity $(I + bG)^{-1} = I - H$,
# $H = bG (I + bG)^{-1}$:
#
# $$\frac{\partial R^c}{\partial Z} = b \sum_k \big(W_k - H_k W_k\big)\, U_k^\top .$$
#
# $H_k$ is the hat matrix of ridge regression with the linear kernel $G_k$:
# $H_k W_k$ rebuilds every token from the tokens it resembles in subspace $k$,
# keeping the directions that many tokens share (large eigenvalues of $G_k$)
# and dropping the rest. So the gradient step shrinks each token's
# projection, except for the part it has in common with the other tokens of
# that subspace. That part is what attention will compute; everything below
# is a choice of how to approximate $H_k$.
#
# The data: `subspace_mixture` puts $N$ unit-length tokens on $K = 4$
# orthogonal subspaces of dimension $p = 8$ in $d = 32$ (so $Kp = d$, as in
# every CRATE config), with noise. We take $\epsilon = 1$ and a step with
# $\kappa b = 1/2$.
#
# **Your turn.** With `W` ($W_k = ZU_k$, shape $(K, N, p)$) and `G` given,
# compute the ridge hat matrices `H_exact` $= I - (I + bG_k)^{-1}$ (one per
# subspace, use `np.linalg.solve`), the gradient
# `grad_exact` $= b \sum_k (W_k - H_k W_k) U_k^\top$ (`back_to_tokens` does the
# sum over $k$), and the step `Z_exact` $= Z - \kappa\,$`grad_exact`.

# %%
N = 128 if FAST else 256
d, K, p, eps = 32, 4, 8, 1.0
b = p / (N * eps ** 2)
kappa = 0.5 / b
Z, labels, U = subspace_mixture(N, d, K, p, noise=0.5, rng=0, normalize=True)   # (N, d), (K, d, p)


def softmax(S):
    """Row softmax (whitebox.functional.softmax_forward: minus the row max, so that
    exp never overflows)."""
    return F.softmax_forward(S)[0]


def back_to_tokens(V, U):
    """sum_k V_k U_k^T: per-subspace rows V (K, N, p) back to token space (N, d)."""
    return np.einsum("knp,kdp->nd", V, U)


W = rate.project_heads(Z, U)                    # (K, N, p)   W_k = Z U_k
G = W @ W.transpose(0, 2, 1)                    # (K, N, N)   token-token Gram per subspace
I_N = np.eye(N)
### BEGIN SOLUTION
H_exact = I_N - np.linalg.solve(I_N + b * G, I_N)         # (K, N, N)   ridge hat matrices
grad_exact = b * back_to_tokens(W - H_exact @ W, U)       # (N, d)
Z_exact = Z - kappa * grad_exact
### END SOLUTION

# %%
Z_lib = rate.compression_step(Z, U, eps, kappa)           # the library's exact step
print(f"hand-written exact step vs whitebox.rate.compression_step: "
      f"max |diff| = {np.abs(Z_exact - Z_lib).max():.1e}")
check("exact step vs whitebox.rate.compression_step", Z_exact, Z_lib, tol=1e-10)

# %% [markdown]
# ## 2. Three approximations, one at a time
#
# Every variant below is a step $Z^+ = Z - \kappa\, g$ with a different $g$.
#
# **(0) No interaction**, $H_k \approx 0$: $g = b \sum_k W_k U_k^\top$. A plain
# shrink of every projection. It is our baseline: what the step would be if
# tokens ignored each other.
#
# **(1) Neumann series.** $(I + M)^{-1} = I - M + M^2 - \dots$ for
# $\|M\| < 1$; keep the first two terms, $(I + bG)^{-1} \approx I - bG$, that is
# $H_k \approx b G_k$. The series converges only for $b \lambda_{\max}(G_k) < 1$, and the
# truncation is good for $b \lambda_{\max} \ll 1$ (large $\epsilon$).
#
# **(2) Softmax.** $bG_k$ weighs token $j$'s contribution to token $i$ by an
# inner product, which can be negative and whose rows do not sum to one.
# Replace it by a *soft membership*: $H_k \approx \operatorname{softmax}(\beta G_k)$,
# row by row, so each token takes a convex combination of the tokens that
# look like it in subspace $k$. (The paper writes $G_k \to \operatorname{softmax}(G_k)$
# and keeps the factor $b$ in front; the constant is absorbed by the learned
# output projection in the real network. We replace the whole weight $bG_k$ so
# the smoother keeps unit row sums.) The temperature $\beta$ is a free knob;
# the derivation says nothing about it.
#
# **(3) Complete subspaces.** If $\sum_k U_k U_k^\top = I$ (orthonormal and
# $Kp = d$), then $b \sum_k W_k U_k^\top = bZ$, and the whole step becomes
#
# $$Z^+ = (1 - \kappa b)\, Z + \kappa b \underbrace{\sum_k \operatorname{softmax}(\beta\, W_k W_k^\top)\, W_k\, U_k^\top}_{\text{MSSA}(Z)} .$$
#
# That is multi-head self-attention with one projection per head used as
# query, key *and* value, and the same $U_k$ projecting back.

# %%
def approximate_step(Z, U, H, complete=False):
    """Z - kappa g with g = b sum_k (W_k - H_k W_k) U_k^T; complete: sum_k U_k U_k^T -> I."""
    W = rate.project_heads(Z, U)                             # (K, N, p)
    first_order = b * Z if complete else b * back_to_tokens(W, U)
    return Z - kappa * (first_order - b * back_to_tokens(H @ W, U))


def all_steps(Z, U, beta):
    """The exact step and every approximation of it, on tokens Z and bases U."""
    W = rate.project_heads(Z, U)
    G = W @ W.transpose(0, 2, 1)                             # (K, N, N)
    I_N = np.eye(len(Z))
    H_soft = softmax(beta * G)                               # (K, N, N) rows sum to 1
    return {
        "exact": approximate_step(Z, U, I_N - np.linalg.solve(I_N + b * G, I_N)),
        "(0) no interaction": approximate_step(Z, U, np.zeros_like(G)),
        "(1) Neumann": approximate_step(Z, U, b * G),
        "(2) softmax": approximate_step(Z, U, H_soft),
        "(3) + complete U": approximate_step(Z, U, H_soft, complete=True),
    }


def cosine(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(steps, Z):
    """How far each approximate step is from the exact one (steps as displacements)."""
    exact = steps["exact"] - Z
    interaction = exact - (steps["(0) no interaction"] - Z)   # the part attention must supply
    rows = {}
    for name, Z_new in steps.items():
        step = Z_new - Z
        rows[name] = dict(
            cos=cosine(step, exact),
            size=np.linalg.norm(step) / np.linalg.norm(exact),
            dist=np.linalg.norm(step - exact) / np.linalg.norm(exact),
            cos_interaction=(cosine(step - (steps["(0) no interaction"] - Z), interaction)
                             if name not in ("exact", "(0) no interaction") else np.nan))
    return rows

# %% [markdown]
# ### The temperature
#
# Before we can measure approximation (2) we must pick $\beta$. Sweep it on the
# data and watch two numbers: the distance of the whole step to the exact one,
# and the cosine between the *interaction parts* (the step minus the baseline
# (0)), which says whether the softmax pushes tokens the same way as $H_k$.

# %%
betas = np.logspace(-1, 1.5, 11 if FAST else 26)
sweep = np.array([[compare(all_steps(Z, U, beta), Z)["(2) softmax"][key]
                   for key in ("dist", "cos_interaction")] for beta in betas])   # (betas, 2)
beta = float(betas[np.argmin(sweep[:, 0])])
print(f"beta with the closest step: {beta:.2f}  (distance {sweep[:, 0].min():.3f}, "
      f"interaction cosine {sweep[np.argmin(sweep[:, 0]), 1]:.3f})")
print(f"1/sqrt(p) = {p ** -0.5:.2f} applied to unit-length tokens (not the official scale): "
      f"interaction cosine "
      f"{compare(all_steps(Z, U, p ** -0.5), Z)['(2) softmax']['cos_interaction']:.3f}")

# The official temperature 1/sqrt(p) acts on LayerNorm-scale tokens (length ~ sqrt(d))
# projected by W_qkv. Measure the squared row norm of W_qkv at an actual initialisation.
U_init_small = nn.MSSA(d, heads=K, dim_head=p, dtype="float64", seed=0).subspaces()  # (K, d, p)
row_sq = float((U_init_small ** 2).sum(axis=1).mean())      # mean ||row of W_qkv||^2
beta_orthonormal = d / np.sqrt(p)                           # if U were orthonormal
beta_init = row_sq * d / np.sqrt(p)                         # at the initial weight scale
init_row = compare(all_steps(Z, U, beta_init), Z)["(2) softmax"]
print(f"mean squared row norm of W_qkv at init: {row_sq:.3f}  (uniform(+-1/sqrt(d)): 1/3)")
print(f"official 1/sqrt(p) in our units: d/sqrt(p) = {beta_orthonormal:.1f} if U were orthonormal, "
      f"{row_sq:.2f} d/sqrt(p) = {beta_init:.2f} at init  (distance {init_row['dist']:.3f}, "
      f"interaction cosine {init_row['cos_interaction']:.3f})")

# %% [markdown]
# A temperature that is too low makes the softmax nearly uniform: every token
# takes the mean of all tokens, which says nothing about membership (the
# interaction cosine is poor). Too high, and each token attends only to
# itself, so the interaction term cancels the first-order shrink and the step
# becomes too small. In between, the softmax points where the exact $H_k$
# points.
#
# Where does the official temperature $1/\sqrt p$ sit? Our tokens have unit
# length; the network's come out of a LayerNorm with length about $\sqrt d$, so
# *if $U$ were orthonormal* the official temperature would be $\beta = d/\sqrt p$
# in our units, in the too-sharp part of the sweep. But $W_{qkv}$ is not
# orthonormal. At the official initialisation (PyTorch's `Linear` default,
# entries uniform in $\pm 1/\sqrt d$) each row has squared norm about
# $d \cdot \tfrac{1}{3d} = \tfrac13$ (measured above: `row_sq`), which scales every
# similarity by the same factor: the effective temperature is about
# $d/(3\sqrt p)$, right where the sweep finds its best $\beta$. Training can then
# move it, since the scale of $W_{qkv}$ is learned (see section 6).
#
# ### The table
#
# Now every approximation, cumulatively, on two datasets: the orthogonal
# subspaces above, and $K$ *random* subspaces with $Kp = d$ (general position:
# complete, but $\sum_k U_k U_k^\top \neq I$).

# %%
Z_rand, labels_rand, U_rand = subspace_mixture(N, d, K, p, noise=0.5, rng=1, normalize=True,
                                               coherence=None)
datasets = {"orthogonal": (Z, U), "random": (Z_rand, U_rand)}
tables = {name: compare(all_steps(Zs, Us, beta), Zs) for name, (Zs, Us) in datasets.items()}

print(f"{'variant':<21}|" + "|".join(f"{name:^35}" for name in datasets))
print(f"{'':<21}|" + "|".join(f"{'cos':>8}{'size':>8}{'dist':>8}{'cos int':>10} "
                              for _ in datasets))
for variant in tables["orthogonal"]:
    cells = []
    for name in datasets:
        r = tables[name][variant]
        cos_int = "-" if np.isnan(r["cos_interaction"]) else f"{r['cos_interaction']:.3f}"
        cells.append(f"{r['cos']:8.3f}{r['size']:8.3f}{r['dist']:8.3f}{cos_int:>10} ")
    print(f"{variant:<21}|" + "|".join(cells))

# %% [markdown]
# Reading the table (`cos`: cosine with the exact step; `size`: norm ratio;
# `dist`: $\|g - g_{\text{exact}}\| / \|g_{\text{exact}}\|$; `cos int`: cosine of
# the interaction parts):
#
# - Every variant has a cosine near 1 with the exact step, *including the
#   baseline that ignores the other tokens*. The step is dominated by the
#   plain shrink $bZ$, so the cosine of whole steps is a weak test. The
#   distance and the interaction cosine are the honest measures.
# - **Neumann** is excellent here ($b\lambda_{\max} \approx 0.4$); it degrades
#   quickly as $\epsilon$ shrinks (exercise 2).
# - **Softmax** gets the interaction direction mostly right and, with a good
#   temperature, the size too: closer to the exact step than the baseline.
# - **Complete U** changes nothing on orthogonal subspaces (there it is an
#   identity) but costs a lot on random ones, where the assumption is false.
#
# ### Does it compress?
#
# Take three steps of each variant and measure $R^c$ with the true bases.

# %%
n_steps = 3
rc_paths = {}
for variant in tables["orthogonal"]:
    Zt, path = Z.copy(), [float(rate.compression_rate(Z, U, eps))]
    for _ in range(n_steps):
        Zt = all_steps(Zt, U, beta)[variant]
        path.append(float(rate.compression_rate(Zt, U, eps)))
    rc_paths[variant] = path
    print(f"{variant:<21} Rc: " + " -> ".join(f"{v:.3f}" for v in path))

# %% [markdown]
# All of them compress, and the approximate steps track the exact path. One
# caution: $R^c$ alone, with fixed $U$, is reduced most easily by *shrinking*
# the tokens. Repeated without end (and without the LayerNorm that the
# network puts before each layer), these steps collapse the tokens; in the
# full objective the expansion term $R(Z)$ stops that, and CRATE takes only
# one such step per layer.

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
variants = list(tables["orthogonal"])[1:]
x_pos = np.arange(len(variants))
for offset, name in ((-0.2, "orthogonal"), (0.2, "random")):
    axes[0].bar(x_pos + offset, [tables[name][v]["dist"] for v in variants], width=0.4,
                label=f"{name} subspaces")
axes[0].set_xticks(x_pos, [v.replace(" ", "\n", 1) for v in variants], fontsize=8)
axes[0].set_ylabel("||g - g_exact|| / ||g_exact||")
axes[0].set_title(f"Distance to the exact step (eps={eps}, beta={beta:.2f})")
axes[0].legend()
axes[1].semilogx(betas, sweep[:, 0], marker="o", ms=3, label="distance of the step")
axes[1].semilogx(betas, sweep[:, 1], marker="s", ms=3, label="cosine of interaction parts")
axes[1].axvline(beta, color="gray", ls="--", lw=0.8, label=f"best beta = {beta:.2f}")
axes[1].axvline(beta_orthonormal, color="tab:red", ls=":", lw=1,
                label="official 1/sqrt(p), LayerNorm scale,\nif U were orthonormal")
axes[1].axvline(beta_init, color="tab:purple", ls="-.", lw=1,
                label=f"official 1/sqrt(p), LayerNorm scale,\nat init (|row|$^2$ = {row_sq:.2f})")
axes[1].set_xlabel("softmax temperature beta")
axes[1].set_ylabel("relative distance / cosine")
axes[1].set_ylim(0, 1.5 * sweep.max())                     # room for the legend above the curves
axes[1].set_title("Approximation (2) against the temperature")
axes[1].legend(fontsize=8)
for variant, path in rc_paths.items():
    axes[2].plot(path, marker="o", ms=3, label=variant,
                 ls="--" if variant.startswith("(3)") else "-")   # (3) = (2) on orthogonal U
axes[2].set_xticks(range(n_steps + 1))
axes[2].set_xlabel("step")
axes[2].set_ylabel("Rc(Z | U)  [nats]")
axes[2].set_title("Compression along a few steps")
axes[2].legend(fontsize=8)
fig.tight_layout()
save(fig, "02_approximations.png")

# %% [markdown]
# ## 3. MSSA forward, in small named steps
#
# The network stores the $K$ bases as the row blocks of one matrix
# $W_{qkv} \in \mathbb{R}^{Kp \times d}$ (row block $k$ is $U_k^\top$), computes
# all projections with one product, and uses them as query, key and value.
# It also has its own output projection $W_{out}$ with a bias, and the
# temperature $s = 1/\sqrt p$:
#
# $$w = x W_{qkv}^\top,\quad S_k = s\, w_k w_k^\top,\quad A_k = \operatorname{softmax}(S_k),
#   \quad O_k = A_k w_k,\quad y = [O_1 \dots O_K]\, W_{out}^\top + b_{out}.$$
#
# Every step gets a name, so that the backward can give each a `d`-twin.
#
# **Your turn.** Inside `mssa_steps_forward`, from the split heads `w`
# $(B, K, N, p)$ compute the similarities `S` (with the temperature `s`; with
# `causal=True` set $S_{ij} = -\infty$ for $j > i$), a softmax that subtracts
# the row max (`S_max`, `E`, `A`), and `O` $= A w$. The check compares the
# output with `whitebox.functional.mssa_forward`.

# %%
def mssa_steps_forward(x, W_qkv, W_out, b_out, K, causal=False):
    """MSSA on a batch x (B, N, d), one named step per line. Returns y, cache."""
    B, N, d = x.shape
    p = W_qkv.shape[0] // K
    s = p ** -0.5
    w_cat = x @ W_qkv.T                                      # (B, N, K p)  q = k = v
    w = w_cat.reshape(B, N, K, p).transpose(0, 2, 1, 3)      # (B, K, N, p)  split heads
    ### BEGIN SOLUTION
    S = s * w @ w.transpose(0, 1, 3, 2)                      # (B, K, N, N)  similarities
    if causal:
        S = np.where(np.triu(np.ones((N, N), dtype=bool), 1), -np.inf, S)
    S_max = S.max(axis=-1, keepdims=True)                    # (B, K, N, 1)
    E = np.exp(S - S_max)                                    # (B, K, N, N)
    A = E / E.sum(axis=-1, keepdims=True)                    # (B, K, N, N)  rows sum to 1
    O = A @ w                                                # (B, K, N, p)
    ### END SOLUTION
    O_cat = O.transpose(0, 2, 1, 3).reshape(B, N, K * p)     # (B, N, K p)  merge heads
    y = O_cat @ W_out.T + b_out                              # (B, N, d)
    cache = dict(x=x, W_qkv=W_qkv, W_out=W_out, w=w, A=A, O_cat=O_cat, s=s, K=K)
    return y, cache


B, N_small, d_small, K_small, p_small = 2, 5, 8, 2, 4
x = rng.standard_normal((B, N_small, d_small))
W_qkv = rng.standard_normal((K_small * p_small, d_small)) / np.sqrt(d_small)
W_out = rng.standard_normal((d_small, K_small * p_small)) / np.sqrt(K_small * p_small)
b_out = 0.1 * rng.standard_normal(d_small)
y, cache = mssa_steps_forward(x, W_qkv, W_out, b_out, K_small)
print("y", y.shape, " attention", cache["A"].shape,
      " rows sum to", np.unique(cache["A"].sum(-1).round(12)))

# %%
check("MSSA forward y vs whitebox.functional.mssa_forward", y,
      F.mssa_forward(x, W_qkv, W_out, b_out, K_small)[0], tol=1e-12)
check("attention rows sum to one", cache["A"].sum(-1), np.ones((B, K_small, N_small)),
      tol=1e-12)

# %% [markdown]
# ## 4. MSSA backward, with `d`-twins
#
# Walk the steps in reverse; `dX` is $\partial L / \partial X$ for a scalar
# loss $L$ with upstream gradient `dy`.
#
# - $y = O_{cat} W_{out}^\top + b_{out}$: `dW_out = dy^T O_cat`, `db_out = sum dy`,
#   `dO_cat = dy W_out`.
# - $O_k = A_k w_k$: `dA = dO w^T`, and *one* contribution to `dw`: `A^T dO`.
# - Softmax, row by row: `dS = A * (dA - rowsum(dA * A))`.
# - $S_k = s\, w_k w_k^\top$. Here is the trap. In ordinary attention
#   $S = s\, q k^\top$ gives `dq = s dS k` and `dk = s dS^T q`. In MSSA
#   $q = k = v = w$, so $w$ receives *both*, plus the value path:
#
# $$dw = A^\top dO + s\,(dS + dS^\top)\, w .$$
#
# - $w = x W_{qkv}^\top$: `dx = dw W_qkv`, `dW_qkv = dw^T x` (summed over tokens).
#
# We also write the tempting wrong version, which keeps only the query path
# of $S$, to see what a gradient check says about it.
#
# **Your turn.** Write the body of `mssa_steps_backward`, from `dW_out` to
# `dW_qkv`, every line a `d`-twin of a forward line; with `symmetric=False` it
# must keep only the query path (`s dS w`). The checks below compare each
# gradient with `whitebox.functional.mssa_backward` and with finite differences.

# %%
def mssa_steps_backward(dy, cache, symmetric=True):
    """Gradients (dx, dW_qkv, dW_out, db_out) of MSSA; symmetric=False forgets dk."""
    x, W_qkv, W_out, w, A, O_cat, s, K = (cache[k] for k in
                                          ("x", "W_qkv", "W_out", "w", "A", "O_cat", "s", "K"))
    B, N, d = x.shape
    p = w.shape[-1]
    ### BEGIN SOLUTION
    dW_out = dy.reshape(-1, d).T @ O_cat.reshape(-1, K * p)  # (d, K p)
    db_out = dy.sum(axis=(0, 1))                             # (d,)
    dO_cat = dy @ W_out                                      # (B, N, K p)
    dO = dO_cat.reshape(B, N, K, p).transpose(0, 2, 1, 3)    # (B, K, N, p)
    dA = dO @ w.transpose(0, 1, 3, 2)                        # (B, K, N, N)
    dw = A.transpose(0, 1, 3, 2) @ dO                        # (B, K, N, p)  value path
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True))     # (B, K, N, N)  softmax backward
    if symmetric:
        dw = dw + s * (dS + dS.transpose(0, 1, 3, 2)) @ w    # query AND key paths
    else:
        dw = dw + s * dS @ w                                 # query path only: wrong
    dw_cat = dw.transpose(0, 2, 1, 3).reshape(B, N, K * p)   # (B, N, K p)
    dx = dw_cat @ W_qkv                                      # (B, N, d)
    dW_qkv = dw_cat.reshape(-1, K * p).T @ x.reshape(-1, d)  # (K p, d)
    ### END SOLUTION
    return dx, dW_qkv, dW_out, db_out


# %%
dy_check = rng.standard_normal(y.shape)
ours = mssa_steps_backward(dy_check, cache)
reference = F.mssa_backward(dy_check, F.mssa_forward(x, W_qkv, W_out, b_out, K_small)[1])
for name, g, g_ref in zip(["dx", "dW_qkv", "dW_out", "db_out"], ours, reference):
    check(f"MSSA backward {name} vs whitebox.functional.mssa_backward", g, g_ref, tol=1e-10)
dx_numeric = numerical_gradient(lambda: mssa_steps_forward(x, W_qkv, W_out, b_out, K_small)[0],
                                x, dy_check)
check("MSSA backward dx vs finite differences", ours[0], dx_numeric, tol=1e-6,
      floor=1e-3 * np.abs(dx_numeric).max())

# %% [markdown]
# ### Gradient check
#
# `whitebox.gradcheck.check_backward` contracts the output with a random
# `dout`, perturbs every input entry by $\pm h$ (float64, central
# differences) and compares with the backward. It raises, naming the input
# and the entry, when they disagree.

# %%
inputs = [x, W_qkv, W_out, b_out]
errors = check_backward(lambda *a: mssa_steps_forward(*a, K_small), mssa_steps_backward, inputs)
print("correct backward, relative errors:",
      {name: f"{errors[i]:.1e}" for i, name in enumerate(["x", "W_qkv", "W_out", "b_out"])})
try:
    check_backward(lambda *a: mssa_steps_forward(*a, K_small),
                   lambda dy, c: mssa_steps_backward(dy, c, symmetric=False), inputs)
    wrong_caught = False
except GradientCheckError as err:
    wrong_caught = True
    print("without the symmetric term:", err)

# %% [markdown]
# The output projection is fine either way (it is downstream of the mistake),
# but `dx` and `dW_qkv` are wrong by a large margin: the check catches the
# forgotten key path at once.
#
# ## 5. The library call
#
# `whitebox.functional.mssa_forward` / `mssa_backward` compute the same thing
# with in-place softmax arithmetic and an optional causal mask and dropout;
# `whitebox.nn.MSSA` wraps them and stores the parameters under the official
# state-dict names (`qkv.weight`, `to_out.0.weight`, `to_out.0.bias`).

# %%
dy = rng.standard_normal(y.shape)
grads_steps = mssa_steps_backward(dy, cache)

y_fn, cache_fn = F.mssa_forward(x, W_qkv, W_out, b_out, K_small)
grads_fn = F.mssa_backward(dy, cache_fn)

mssa = nn.MSSA(d_small, heads=K_small, dim_head=p_small, dtype="float64")
mssa.load_state_dict({"qkv.weight": W_qkv, "to_out.0.weight": W_out, "to_out.0.bias": b_out})
y_mod = mssa(x)
mssa.zero_grad()
dx_mod = mssa.backward(dy)
grads_mod = (dx_mod, mssa.grads()["qkv.weight"], mssa.grads()["to_out.0.weight"],
             mssa.grads()["to_out.0.bias"])

lib_diffs = {"functional y": np.abs(y_fn - y).max(), "nn.MSSA y": np.abs(y_mod - y).max()}
for i, name in enumerate(["dx", "dW_qkv", "dW_out", "db_out"]):
    lib_diffs[f"functional {name}"] = np.abs(grads_fn[i] - grads_steps[i]).max()
    lib_diffs[f"nn.MSSA {name}"] = np.abs(grads_mod[i] - grads_steps[i]).max()
for name, v in lib_diffs.items():
    print(f"{name:<20} max |diff| vs step by step: {v:.1e}")

# %% [markdown]
# And the link back to section 2: with the output projection *tied* to the
# bases ($W_{out} = W_{qkv}^\top$, no bias) and temperature $\beta$, the
# library's MSSA is exactly the attention term of approximation (3), and
# $(1 - \kappa b) Z + \kappa b\, \text{MSSA}(Z)$ is the approximate step.

# %%
U_cat = rate.stack_bases(U)                                  # (d, K p) = [U_1 .. U_K]
mssa_tied, _ = F.mssa_forward(Z[None], U_cat.T, U_cat, None, K, scale=beta)   # (1, N, d)
Z_mssa_step = (1 - kappa * b) * Z + kappa * b * mssa_tied[0]
tied_diff = np.abs(Z_mssa_step - all_steps(Z, U, beta)["(3) + complete U"]).max()
print(f"(1 - kappa b) Z + kappa b MSSA(Z) vs approximation (3): max |diff| = {tied_diff:.1e}")

# %% [markdown]
# ## 6. Where the official code departs from the derivation
#
# The official `Attention` module (and `whitebox.nn.MSSA`, which matches it)
# keeps the shape of the derivation but loosens four things:
#
# 1. **Untied output projection with a bias.** The derivation projects back
#    with the same $U_k$ ($W_{out} = W_{qkv}^\top$, no bias); the code learns a
#    separate `to_out` Linear with a bias. At initialisation the two are
#    unrelated.
# 2. **Temperature $1/\sqrt p$.** The derivation has none (or the free $\beta$
#    above). On LayerNorm-scale tokens ($\|x\| \approx \sqrt d$) it would equal
#    $\beta = d/\sqrt p$ in the units of section 2 if $U$ were orthonormal, in
#    the "too sharp" part of our sweep. At the official initialisation the rows
#    of $W_{qkv}$ have squared norm about $1/3$ (printed below), so the effective
#    temperature is about $d/(3\sqrt p)$, near the sweep's best; the learned
#    scale of $W_{qkv}$ moves it during training.
# 3. **Residual coefficient 1.** The step is $(1 - \kappa b) Z + \kappa b\,
#    \text{MSSA}(Z)$; the code computes $Z + \text{MSSA}(Z)$. The factor
#    $\kappa b$ is absorbed into `to_out`, and the shrink $(1 - \kappa b)$ is
#    dropped; the LayerNorm before the next operator resets the scale anyway.
# 4. **Nothing keeps $U$ orthonormal.** $W_{qkv}$ is an ordinary learned
#    weight; the "subspaces" are whatever training makes of it.
#
# The numbers at initialisation (official init, torch-style uniform):

# %%
official = nn.MSSA(384, heads=6, dim_head=64, dtype="float64", seed=0)   # CRATE-T sizes
U_init = official.subspaces()                               # (K, d, p)
W_out_init = official.to_out[0].param("weight")             # (d, K p)
gram_err = np.abs(U_init.transpose(0, 2, 1) @ U_init - np.eye(64)).max()
tied_cos = cosine(W_out_init, rate.stack_bases(U_init))
sum_UUt = np.einsum("kdp,kep->de", U_init, U_init)          # (d, d), sum_k U_k U_k^T
identity_err = np.linalg.norm(sum_UUt - np.eye(384)) / np.linalg.norm(np.eye(384))
print(f"max |U_k^T U_k - I|                  = {gram_err:.3f}")
print(f"cosine(W_out, [U_1..U_K])            = {tied_cos:+.3f}")
print(f"||sum_k U_k U_k^T - I|| / ||I||      = {identity_err:.3f}")
row_sq_T = float((U_init ** 2).sum(axis=1).mean())          # mean ||row of W_qkv||^2
print(f"mean squared row norm of W_qkv (CRATE-T init) = {row_sq_T:.3f}")
print(f"official temperature in section-2 units (d=32, p=8): beta = d/sqrt(p) = "
      f"{beta_orthonormal:.1f} if U were orthonormal, {beta_init:.2f} at init "
      f"(sweep best {beta:.2f})")

# %% [markdown]
# ## Summary
#
# - The exact compression step is $Z - \kappa b \sum_k (W_k - H_k W_k) U_k^\top$
#   with $H_k$ the ridge hat matrix of the tokens in subspace $k$: shrink each
#   projection except what the other tokens explain.
# - Neumann ($H_k \approx bG_k$) is accurate only for $b\lambda_{\max} \ll 1$;
#   softmax ($H_k \approx \operatorname{softmax}(\beta G_k)$) gives a convex soft
#   membership whose direction matches the exact interaction term for a good
#   temperature; complete orthonormal bases turn $\sum_k W_k U_k^\top$ into $Z$.
#   The result is MSSA, attention with $q = k = v$.
# - Because $q = k = v$, the backward through $S = s\,ww^\top$ has the
#   symmetric term $s(dS + dS^\top)w$; forgetting it fails the gradient check.
# - The official code unties the output projection (with bias), fixes the
#   temperature to $1/\sqrt p$ (at the initial weight scale, near the best
#   $\beta$ of our sweep), uses residual coefficient 1, and never
#   re-orthonormalises $U$.
#
# ## Exercises
#
# 1. **Causal mask.** Language models need token $i$ to see only tokens
#    $j \le i$. `mssa_steps_forward(..., causal=True)` sets $S_{ij} = -\infty$ for
#    $j > i$. Check that it agrees with `F.mssa_forward(..., causal=True)`,
#    that outputs do not depend on later tokens, and that the *same* backward
#    passes the gradient check (why does it need no change?).
# 2. **Neumann error against $\epsilon$.** For $\epsilon$ from 0.35 to 4, measure
#    the distance of the Neumann step to the exact step, next to
#    $b\lambda_{\max}$ (the largest eigenvalue of $bG_k$). Where does it break?

# %%
# Exercise 1: y_causal (causal forward of x), y_later (the same with only the last
# token changed by +1), causal_errors (check_backward of the causal forward).
### BEGIN SOLUTION
# The mask only changes the forward: masked entries have A = 0, so the
# softmax backward A * (dA - rowsum(dA * A)) is zero there by itself.
y_causal, cache_causal = mssa_steps_forward(x, W_qkv, W_out, b_out, K_small, causal=True)
x_later = x.copy()
x_later[:, -1] += 1.0                                        # change only the last token
y_later, _ = mssa_steps_forward(x_later, W_qkv, W_out, b_out, K_small, causal=True)
causal_errors = check_backward(lambda *a: mssa_steps_forward(*a, K_small, causal=True),
                               mssa_steps_backward, inputs)
### END SOLUTION

# %%
check("exercise 1: causal forward vs F.mssa_forward(causal=True)", y_causal,
      F.mssa_forward(x, W_qkv, W_out, b_out, K_small, causal=True)[0], tol=1e-12)
check("exercise 1: earlier outputs ignore a later token", y_later[:, :-1], y_causal[:, :-1],
      tol=1e-12)
assert np.abs(y_later[:, -1] - y_causal[:, -1]).max() > 1e-3, \
    "exercise 1: the last output must change when the last token does"
assert max(causal_errors.values()) < 1e-7, f"exercise 1: causal gradient check {causal_errors}"

# %%
# Exercise 2: neumann_rows, one row (eps, b lambda_max, Neumann distance) per eps.
### BEGIN SOLUTION
# The Neumann error grows roughly like (b lambda_max)^2 and explodes past 1.
neumann_rows = []
W_i = rate.project_heads(Z, U)                               # (K, N, p)
G_i = W_i @ W_i.transpose(0, 2, 1)                           # (K, N, N)
lam_max = np.linalg.eigvalsh(W_i.transpose(0, 2, 1) @ W_i).max()   # same non-zero spectrum
for eps_i in (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0):
    b_i = p / (N * eps_i ** 2)
    exact_i = b_i * back_to_tokens(np.linalg.solve(np.eye(N) + b_i * G_i, W_i), U)
    neumann_i = b_i * back_to_tokens(W_i - b_i * G_i @ W_i, U)
    dist_i = np.linalg.norm(neumann_i - exact_i) / np.linalg.norm(exact_i)
    neumann_rows.append((eps_i, b_i * lam_max, dist_i))
    print(f"eps {eps_i:4.2f}  b lambda_max {b_i * lam_max:6.3f}  Neumann distance {dist_i:.4f}")
neumann_rows = np.array(neumann_rows)
### END SOLUTION

# %%
neumann_rows = np.asarray(neumann_rows)
assert neumann_rows.shape == (8, 3), f"exercise 2: expected 8 rows of 3, got {neumann_rows.shape}"
assert np.all(np.diff(neumann_rows[:, 2]) < 0), \
    f"exercise 2: the Neumann distance must fall as eps grows, got {neumann_rows[:, 2]}"
assert neumann_rows[0, 2] > 1 and neumann_rows[-1, 2] < 1e-2, \
    f"exercise 2: distance {neumann_rows[0, 2]:.3g} at eps 0.35 (> 1 expected), " \
    f"{neumann_rows[-1, 2]:.3g} at eps 4 (< 0.01 expected)"

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert np.abs(Z_exact - Z_lib).max() < 1e-10
orth, rand = tables["orthogonal"], tables["random"]
assert all(orth[v]["cos"] > 0.9 for v in orth)               # whole steps all look alike...
assert orth["(1) Neumann"]["dist"] < 0.5 * orth["(0) no interaction"]["dist"]
assert orth["(2) softmax"]["dist"] < orth["(0) no interaction"]["dist"]   # ...but distances differ
assert orth["(1) Neumann"]["cos_interaction"] > 0.99
assert orth["(2) softmax"]["cos_interaction"] > 0.8
assert abs(orth["(3) + complete U"]["dist"] - orth["(2) softmax"]["dist"]) < 1e-10
assert rand["(3) + complete U"]["dist"] > 2 * rand["(2) softmax"]["dist"]
assert sweep[0, 1] < sweep[np.argmin(sweep[:, 0]), 1]        # too cold: poor direction
assert all(np.all(np.diff(path) < 0) for path in rc_paths.values())
assert errors and max(errors.values()) < 1e-7
assert wrong_caught
assert max(lib_diffs.values()) < 1e-12
assert tied_diff < 1e-12
assert gram_err > 0.5 and abs(tied_cos) < 0.1 and identity_err > 0.5
assert abs(row_sq - 1 / 3) < 0.05 and abs(row_sq_T - 1 / 3) < 0.02   # uniform(+-1/sqrt(d)) init
assert beta_orthonormal > 2 * beta                           # orthonormal U: too sharp
assert init_row["dist"] < 1.1 * sweep[:, 0].min()            # init scale: near the best beta
assert (OUT / "02_approximations.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
