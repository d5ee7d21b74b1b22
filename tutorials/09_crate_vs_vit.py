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
# # 09. A ViT block beside a CRATE block, line by line
#
# CRATE keeps the transformer's skeleton (pre-norm, attention with a
# residual, then a token-wise layer) and replaces what is inside each half by
# a step of an optimisation:
#
# | | ViT block (timm) | CRATE block |
# |---|---|---|
# | attention input | $h = \mathrm{LN}_1(x)$ | $h = \mathrm{LN}_1(Z^l)$ |
# | projections | $(q, k, v) = h W_{qkv}^\top + b$: three matrices | $w = h U$: **one** matrix, $U = [U_1 \dots U_K]$ |
# | head $k$ | $\mathrm{softmax}(q_k k_k^\top / \sqrt p)\, v_k$ | $\mathrm{softmax}(w_k w_k^\top / \sqrt p)\, w_k$ (MSSA) |
# | output | $x + [\dots]_k W_{proj}^\top + b$ | $Z^{l+1/2} = Z^l + [\dots]_k W_{out}^\top + b$ |
# | token-wise layer | $x + \mathrm{fc}_2(\mathrm{GELU}(\mathrm{fc}_1\, \mathrm{LN}_2 x))$, hidden $4d$ | $\mathrm{ReLU}(h_2 + \eta\, h_2 (D - D^\top D) - \eta\lambda)$, one ISTA step, $h_2 = \mathrm{LN}_2(Z^{l+1/2})$ |
# | residual after it | yes | no: the ISTA step *is* the new representation |
#
# In MSSA queries, keys and values are the same tokens seen through the same
# subspaces $U_k$: the head is a gradient step that compresses the tokens
# against $U_k$ (tutorial 02). The ISTA step is one proximal-gradient step
# towards a sparse code of $h_2$ in the dictionary $D$ (tutorial 03).
#
# Below, each column is written out in NumPy from the block's own
# parameters, checked against the library's modules, and the parameters of
# one block are counted by code.

# %%
import time

from whitebox.notebook import OUT, check, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import functional as F
from whitebox.functional.attention import merge_heads, split_heads
from whitebox.models import CRATE, ViT
from whitebox.nn import CRATELayer, TransformerBlock
from whitebox.rate import layer_measures

rng = np.random.default_rng(0)
t_start = time.time()

d, K = 64, 4                 # width and heads; each head p = d / K wide in both blocks
p = d // K
B, N = 2, 10                 # two sequences of ten tokens
x = rng.standard_normal((B, N, d))

vit_block = TransformerBlock(d, K, dtype="float64", seed=1)          # timm's Block
crate_block = CRATELayer(d, K, p, dtype="float64", seed=1)            # CRATE's layer

# %% [markdown]
# ## 1. The two forwards, line by line
#
# Every weight is read from the modules by its official name, so the lines
# below are the whole computation. `softmax` is along the keys.

# %%
def softmax(S):
    S = S - S.max(axis=-1, keepdims=True)
    E = np.exp(S)
    return E / E.sum(axis=-1, keepdims=True)


def layernorm(x, ln):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.param("weight") + ln.param("bias")


def vit_forward(x, blk):
    P = dict(blk.state_dict())
    h = layernorm(x, blk.norm1)                                            # LN1
    qkv = h @ P["attn.qkv.weight"].T + P["attn.qkv.bias"]                  # (B, N, 3d): 3 maps
    q, k, v = (split_heads(qkv[..., i * d:(i + 1) * d], K) for i in range(3))
    A = softmax(q @ k.swapaxes(-1, -2) / np.sqrt(p))                       # (B, K, N, N)
    x = x + merge_heads(A @ v) @ P["attn.proj.weight"].T + P["attn.proj.bias"]
    h2 = layernorm(x, blk.norm2)                                           # LN2
    hidden = F.gelu_forward(h2 @ P["mlp.fc1.weight"].T + P["mlp.fc1.bias"])[0]  # (B, N, 4d)
    return x + hidden @ P["mlp.fc2.weight"].T + P["mlp.fc2.bias"]          # residual


def crate_forward(x, blk, eta=0.1, lam=0.1):
    P = dict(blk.state_dict())
    h = layernorm(x, blk.attn.norm)                                        # LN1
    U = P["0.fn.qkv.weight"].T                                             # (d, K p): ONE map
    w = split_heads(h @ U, K)                                              # (B, K, N, p)
    A = softmax(w @ w.swapaxes(-1, -2) / np.sqrt(p))                       # w_k w_k^T
    x = x + merge_heads(A @ w) @ P["0.fn.to_out.0.weight"].T + P["0.fn.to_out.0.bias"]
    h2 = layernorm(x, blk.ista.norm)                                       # LN2
    D = P["1.fn.weight"]                                                   # (d, d) dictionary
    return np.maximum(h2 + eta * (h2 @ D - h2 @ D.T @ D) - eta * lam, 0)   # no residual


vit_out, crate_out = vit_forward(x, vit_block), crate_forward(x, crate_block)
check("the ViT block, line by line", vit_out, vit_block(x), tol=1e-12)
check("the CRATE block, line by line", crate_out, crate_block(x), tol=1e-12)
print(f"CRATE's output has {100 * (crate_out == 0).mean():.0f}% exact zeros; "
      f"the ViT block's {100 * (vit_out == 0).mean():.0f}%")

# %% [markdown]
# ## 2. Parameters per block, counted
#
# Both blocks have two LayerNorms ($4d$). The ViT block has three projections
# for $q, k, v$ and a 4x-wide MLP; the CRATE block one projection $U$
# (width $Kp$, here $= d$), the output map, and a square dictionary $D$:
#
# $$\text{ViT: } 12d^2 + 13d \qquad\qquad \text{CRATE } (Kp = d)\text{: } 3d^2 + 5d.$$
#
# The counts below come from the modules themselves, part by part.

# %%
def parts(block):
    """Parameters of a block by part: attention projections, token-wise layer, norms."""
    counts = {"attention": 0, "MLP / ISTA": 0, "LayerNorms": 0}
    for name, value in block.state_dict().items():
        part = ("LayerNorms" if "norm" in name else
                "attention" if name.startswith(("attn.", "0.fn")) else "MLP / ISTA")
        counts[part] += value.size
    return counts


widths = [(64, 4), (192, 3), (384, 6), (768, 12)]      # this notebook's, ViT-Ti, -S, -B
table = []
print(f"{'d':>5} {'K':>3} | {'ViT block':>10} {'CRATE block':>12} {'ratio':>6}")
for dw, kw in widths:
    v = TransformerBlock(dw, kw, dtype="float32", seed=0).num_params()
    c = CRATELayer(dw, kw, dw // kw, dtype="float32", seed=0).num_params()
    table.append((dw, v, c))
    print(f"{dw:5d} {kw:3d} | {v:10,d} {c:12,d} {v / c:6.2f}")
by_part = {"ViT": parts(TransformerBlock(384, 6, seed=0)),
           "CRATE": parts(CRATELayer(384, 6, 64, seed=0))}
for name, counts in by_part.items():
    print(f"d = 384, {name:5s} block: " + ", ".join(f"{k} {n:,}" for k, n in counts.items()))

fig, ax = plt.subplots(figsize=(6, 3))
left = np.zeros(2)
for part in by_part["ViT"]:
    n = np.array([by_part[m][part] for m in ("ViT", "CRATE")])
    ax.barh(["ViT block", "CRATE block"], n, left=left, label=part)
    left += n
ax.set(xlabel="parameters", title="one block at d = 384 (ViT-S / CRATE-S width)")
ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "09_block_parameters.png")

# %% [markdown]
# ## 3. The same measurements on both
#
# The standard blocks capture the same per-layer features as CRATE's
# (`forward(images, capture=True)`): the attention input, and as the
# counterpart of the sparse code the MLP's hidden activations. So
# `whitebox.rate.layer_measures` gives, for both models, the compression $R^c$
# of every layer's attention input on the heads' subspaces (ViT: its value
# projections) and the fraction of non-zero "codes". At initialisation the
# GELU hidden units are dense, while ISTA's ReLU already zeroes part of the
# code; training is what moves $R^c$ (`python -m whitebox.train --model vit`
# records both per epoch).

# %%
images = rng.standard_normal((8, 1, 28, 28))
size = dict(image_size=28, patch_size=7, num_classes=10, dim=64, depth=3, heads=4, channels=1,
            dtype="float64", seed=0)
vit = ViT(**size)
crate = CRATE(dim_head=16, **size)
measures = {name: layer_measures(m, images) for name, m in (("ViT", vit), ("CRATE", crate))}
for name, (rc, nonzero) in measures.items():
    print(f"{name:5s} Rc per layer {np.round(rc, 1)}, non-zero fraction {np.round(nonzero, 2)}")
print(f"whole models at this size: ViT {vit.num_params():,}, CRATE {crate.num_params():,} "
      "parameters")

# %% [markdown]
# ## Summary
#
# - One projection $U$ replaces $W_q, W_k, W_v$: queries, keys and values are
#   the same tokens $h U_k$, and the head compresses them against $U_k$.
# - One ISTA step ($d^2$ numbers) replaces the MLP ($8d^2$): the block's
#   output is a sparse code, with no residual around it.
# - Per block, $12d^2 + 13d$ against $3d^2 + 5d$ parameters: about four times
#   fewer at every width.
#
# ## Checks (running this file is its test)

# %%
for dw, v, c in table:
    assert v == 12 * dw * dw + 13 * dw, (dw, v)
    assert c == 3 * dw * dw + 5 * dw, (dw, c)
    assert 3.9 < v / c < 4.0
assert by_part["ViT"]["MLP / ISTA"] == 8 * 384 ** 2 + 5 * 384
assert by_part["CRATE"]["MLP / ISTA"] == 384 ** 2
assert by_part["ViT"]["attention"] == 4 * 384 ** 2 + 4 * 384
assert by_part["CRATE"]["attention"] == 2 * 384 ** 2 + 384
assert (crate_out == 0).mean() > 0.05 and (vit_out == 0).mean() == 0
assert measures["ViT"][1] == [1.0] * 3                   # GELU: no exact zero
assert all(f < 1.0 for f in measures["CRATE"][1])        # ReLU after the ISTA step
assert all(r > 0 for m in measures.values() for r in m[0])
assert vit.num_params() > 3 * crate.num_params()
assert (OUT / "09_block_parameters.png").exists()
print(f"all checks passed in {time.time() - t_start:.1f} s")
