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
# # 06. Causal CRATE: a white-box language model
#
# The CRATE layer compresses tokens against learned subspaces (MSSA,
# notebook 02) and then sparsifies them against a learned dictionary (ISTA,
# notebook 03). Nothing in that derivation is about images. In this notebook
# we turn it into a character-level language model, the causal CRATE that
# the CRATE authors trained in the GPT-2 setting, and we
#
# 1. derive why a causal mask turns the compression step into a compression
#    of each token against **its past only**, and check it;
# 2. see why generating text needs only **one cached tensor per layer**
#    (half of a usual key/value cache), and check the cache;
# 3. derive the **overcomplete ISTA** of the language model as two proximal
#    steps from zero, write its backward with `d`-twins and check it;
# 4. train a tiny character model on Python's own documentation, sample from
#    it, and look at which dictionary atoms fire on which characters.
#
# Tokens are rows: a sequence is $Z \in \mathbb{R}^{T \times d}$, token $t$ is
# the row $z_t$, and "the past of $t$" is $Z_{\le t}$, its first $t$ rows.

# %%
import time

from whitebox.notebook import FAST, OUT, save   # before pyplot: inline or files
import matplotlib.pyplot as plt
import numpy as np

from whitebox import functional as F
from whitebox import rate
from whitebox.data.text import (CharTokenizer, bigram_cross_entropy, pydoc_corpus,
                                random_windows, sequential_windows, split_text)
from whitebox.functional import token_cross_entropy
from whitebox.gradcheck import GradientCheckError, check_backward
from whitebox.models import CRATEBERT, CRATEGPT
from whitebox.optim import AdamW, WarmupCosine, clip_grad_norm

rng = np.random.default_rng(0)
t_start = time.time()

# %% [markdown]
# ## 1. Compression over time
#
# For $N$ tokens $Z$ and subspaces $U_k \in \mathbb{R}^{d \times p}$ the
# compression term is
# $R_c(Z) = \sum_k \tfrac12 \log\det(I_p + b\, W_k^\top W_k)$ with
# $W_k = Z U_k$ and $b = p / (N \epsilon^2)$. Its gradient (notebook 02) is
# $\nabla_Z R_c = b \sum_k W_k (I_p + b W_k^\top W_k)^{-1} U_k^\top$.
# By the push-through identity $W (I_p + b W^\top W)^{-1} = (I_N + b W W^\top)^{-1} W$
# the same gradient reads, with the **token-token** Gram matrix,
#
# $$\nabla_Z R_c = b \sum_k (I_N + b\, W_k W_k^\top)^{-1} W_k\, U_k^\top .$$
#
# A language model reads text left to right: at position $t$ only
# $Z_{\le t}$ exists. So the natural objective at time $t$ is the compression
# of the past, $R_c(Z_{\le t})$, and the natural update of the newest token is a
# gradient step on it with respect to $z_t$. Row $t$ of the formula above, with
# $N = t$:
#
# $$\frac{\partial R_c(Z_{\le t})}{\partial z_t} = b_t \sum_k \big[(I_t + b_t W_{k,\le t} W_{k,\le t}^\top)^{-1} W_{k,\le t}\big]_t\, U_k^\top .$$
#
# Expand the inverse to first order (Neumann, $(I + M)^{-1} \approx I - M$):
#
# $$\big[(I_t + b_t W W^\top)^{-1} W\big]_t \approx w_t - b_t \sum_{s \le t} (w_t \cdot w_s)\, w_s .$$
#
# The interaction term is a weighted sum over $s \le t$: **past tokens only**.
# Replacing the weights $w_t \cdot w_s$ by a softmax over $s \le t$ is exactly
# masked attention with $q = k = v = w$: the causal MSSA. So the causal mask is
# not an add-on: it is what the compression step becomes when the set being
# compressed grows by one token at a time.
#
# Two checks. First, the row formula against finite differences of $R_c(Z_{\le t})$.

# %%
T_demo, d_demo, K_demo, p_demo, eps = 7, 8, 2, 4, 0.5
Z = rng.standard_normal((T_demo, d_demo))
U = np.linalg.qr(rng.standard_normal((d_demo, K_demo * p_demo)))[0]          # orthonormal
U = U.reshape(d_demo, K_demo, p_demo).transpose(1, 0, 2)                     # (K, d, p)


def grad_last_token(Z_past, U, eps):
    """Row t of b sum_k (I_t + b W_k W_k^T)^{-1} W_k U_k^T, for the prefix Z_past (t, d)."""
    t, p = Z_past.shape[0], U.shape[2]
    b = p / (t * eps ** 2)
    g = np.zeros(Z_past.shape[1])
    for U_k in U:
        W_k = Z_past @ U_k                                                    # (t, p)
        g += b * np.linalg.solve(np.eye(t) + b * W_k @ W_k.T, W_k)[-1] @ U_k.T
    return g


past_grad_err = 0.0
for t in range(1, T_demo + 1):
    numeric = np.zeros(d_demo)
    for j in range(d_demo):                       # central differences on z_t only
        Zp, Zm = Z[:t].copy(), Z[:t].copy()
        Zp[-1, j] += 1e-6
        Zm[-1, j] -= 1e-6
        numeric[j] = (float(rate.compression_rate(Zp, U, eps))
                      - float(rate.compression_rate(Zm, U, eps))) / 2e-6
    analytic = grad_last_token(Z[:t], U, eps)
    past_grad_err = max(past_grad_err, np.abs(analytic - numeric).max() / np.abs(numeric).max())
print(f"d Rc(Z_<=t) / d z_t, formula vs finite differences: max relative error {past_grad_err:.1e}")

# %% [markdown]
# Second, the library's causal MSSA at row $t$ must equal the *unmasked* MSSA
# run on the prefix $Z_{\le t}$ alone, read at its last row: the masked
# operator compresses every token against its own past, all rows at once.

# %%
W_qkv = rng.standard_normal((K_demo * p_demo, d_demo)) / np.sqrt(d_demo)     # (K p, d)
W_out = rng.standard_normal((d_demo, K_demo * p_demo)) / np.sqrt(d_demo)
b_out = rng.standard_normal(d_demo)
causal_out, _ = F.mssa_forward(Z[None], W_qkv, W_out, b_out, K_demo, causal=True)
prefix_err = 0.0
for t in range(1, T_demo + 1):
    on_prefix, _ = F.mssa_forward(Z[None, :t], W_qkv, W_out, b_out, K_demo, causal=False)
    prefix_err = max(prefix_err, np.abs(causal_out[0, t - 1] - on_prefix[0, -1]).max())
print(f"causal MSSA row t vs unmasked MSSA on Z_<=t: max difference {prefix_err:.1e}")

# %% [markdown]
# ## 2. One cached tensor per layer
#
# To generate, a model computes the logits of the newest token, samples, and
# repeats. Recomputing the whole window for every new token costs $T$ times
# too much: the rows of the past do not change (they never look at the
# future). A transformer therefore caches, per layer, what later tokens need
# from earlier ones: the keys and values, two tensors of shape $(B, T, d)$.
#
# In MSSA the query, key and value of a token are **the same vector**
# $w_s = \mathrm{LN}(z_s)\, W_{qkv}^\top$ (one projection per subspace). The
# new token $t$ needs $w_s$ for $s < t$ as keys *and* as values, so the cache
# is **one tensor** per layer: half the memory of a key/value cache, as a
# direct consequence of the white-box derivation ($U_k$ both measures and
# projects). `CRATEGPT.forward_cached` runs new tokens against the cache:
#
# ```python
# w_new = split_heads(x c_attn^T)          # (B, K, t, p): the new tokens' projections
# w = concat(past, w_new)                  # (B, K, P + t, p): THE cache, extended
# A = softmax(w_new w^T / sqrt(p) + mask)  # (B, K, t, P + t)
# y = merge_heads(A w) c_proj^T + b        # w serves as keys and as values
# ```
#
# Check: feeding a sequence through in three pieces gives the logits of one
# whole forward.

# %%
tiny_lm = CRATEGPT(vocab_size=11, block_size=12, dim=16, depth=2, heads=4, dtype="float64",
                   seed=0)
seq = rng.integers(0, 11, (2, 12))
whole = tiny_lm(seq)
cache = tiny_lm.new_cache()
pieces = [tiny_lm.forward_cached(seq[:, :5], cache), tiny_lm.forward_cached(seq[:, 5:6], cache),
          tiny_lm.forward_cached(seq[:, 6:], cache)]
cache_err = np.abs(np.concatenate(pieces, axis=1) - whole).max()
cache_shapes = [tuple(w.shape) for w in cache["past"]]
print(f"cached pieces vs one forward: max difference {cache_err:.1e}; cache per layer "
      f"{cache_shapes[0]} (B, K, T, p): {np.prod(cache_shapes[0])} numbers, "
      f"a key/value cache would hold {2 * np.prod(cache_shapes[0])}")

# %% [markdown]
# ## 3. The overcomplete ISTA: two proximal steps from zero
#
# The language model that the crate-lm code trains replaces the square,
# warm-started ISTA of the classifier by a sparse code in an **overcomplete**
# dictionary: $m = 4d$ atoms, the rows of $W \in \mathbb{R}^{m \times d}$
# (so the dictionary of notebook 03 is $D = W^\top \in \mathbb{R}^{d \times m}$).
# The code $c \in \mathbb{R}^m$ of a token $x$ solves
#
# $$\min_{c \ge 0}\; \lambda \|c\|_1 + \tfrac12 \|x - c W\|^2 ,$$
#
# and the layer takes two proximal-gradient steps on it **from $c = 0$**. The
# gradient of the smooth part is $(c W - x) W^\top$; with $a = x W^\top$:
#
# $$c_1 = \mathrm{ReLU}\big(0 - \eta (0 - a) - \eta\lambda\big) = \mathrm{ReLU}(\eta a - \eta\lambda),$$
# $$c_2 = \mathrm{ReLU}\big(c_1 + \eta (a - c_1 W W^\top) - \eta\lambda\big).$$
#
# The block outputs the *decoded* code $c_2 W$ (width $d$ again). A warm start
# at $x$ is impossible here ($x$ has $d$ entries, the code $m$), which is why
# the first step starts from zero. The forward in small steps:

# %%
def lm_ista_forward(x, W, eta, lam):
    a = x @ W.T                                    # (N, m) correlations with the atoms
    u1 = eta * a - eta * lam                       # (N, m)
    c1 = np.maximum(u1, 0)                         # first prox step from 0
    r = a - c1 @ W @ W.T                           # (N, m) = (x - c1 W) W^T, the residual's correlations
    u2 = c1 + eta * r - eta * lam                  # (N, m)
    c2 = np.maximum(u2, 0)                         # second prox step
    out = c2 @ W                                   # (N, d) decoded
    return out, dict(x=x, W=W, a=a, u1=u1, c1=c1, u2=u2, c2=c2, eta=eta)


# %% [markdown]
# The backward, one `d`-twin per line, read bottom-up:
#
# | forward | backward |
# |---|---|
# | $out = c_2 W$ | $dc_2 = d\,out\, W^\top$, $dW \mathrel{+}= c_2^\top d\,out$ |
# | $c_2 = \mathrm{ReLU}(u_2)$ | $du_2 = dc_2 \odot [u_2 > 0]$ |
# | $u_2 = c_1 + \eta a - \eta c_1 W W^\top - \eta\lambda$ | $dc_1 = du_2 - \eta\, du_2 W W^\top$, $da = \eta\, du_2$, $dW \mathrel{-}= \eta\,(c_1^\top du_2 + du_2^\top c_1)\, W$ |
# | $c_1 = \mathrm{ReLU}(u_1)$, $u_1 = \eta a - \eta\lambda$ | $da \mathrel{+}= \eta\, dc_1 \odot [u_1 > 0]$ |
# | $a = x W^\top$ | $dx = da\, W$, $dW \mathrel{+}= da^\top x$ |
#
# The Gram term $c_1 W W^\top$ is quadratic in $W$, so its gradient has two
# parts, one per factor: $-\eta\,(c_1^\top du_2 + du_2^\top c_1) W$. (The library
# never forms the $m \times m$ matrix $W W^\top$: it computes $(c_1 W) W^\top$,
# two products of cost $N d m$, instead of $d m^2 + N m^2$.)

# %%
def lm_ista_backward(dout, cache):
    x, W, eta = cache["x"], cache["W"], cache["eta"]
    c1, c2 = cache["c1"], cache["c2"]
    dW = c2.T @ dout                               # (m, d) through out = c2 W
    dc2 = dout @ W.T                               # (N, m)
    du2 = dc2 * (cache["u2"] > 0)                  # (N, m)
    dc1 = du2 - eta * (du2 @ W @ W.T)              # (N, m) through u2's c1 terms
    da = eta * du2                                 # (N, m) through u2's eta a
    dW -= eta * (c1.T @ du2 + du2.T @ c1) @ W      # through the Gram term c1 W W^T
    da += eta * dc1 * (cache["u1"] > 0)            # through c1 = ReLU(eta a - eta lambda)
    dx = da @ W                                    # (N, d)
    dW += da.T @ x                                 # through a = x W^T
    return dx, dW


x_small = rng.standard_normal((6, 5))
W_small = rng.standard_normal((20, 5)) / np.sqrt(20)   # ||W||^2 < 2 / eta: steps converge
eta_demo, lam_demo = 0.5, 0.05                     # a larger step makes the test sharper
ista_errors = check_backward(lambda x, W: lm_ista_forward(x, W, eta_demo, lam_demo),
                             lm_ista_backward, (x_small, W_small))
print("our overcomplete ISTA backward vs finite differences:", ista_errors)

# %% [markdown]
# The library computes the same thing with one shared functional pair,
# `F.overcomplete_ista_forward(x, D, eta, lam)` with $D = W^\top$, used by the
# language model and by CRATE-alpha alike. So is the Module
# `OvercompleteISTA`: here it decodes with the same $W$ and maps the
# dictionary's gradient back with a transpose; CRATE-alpha builds it with
# `tied=False`, which decodes with a second dictionary of its own.

# %%
from whitebox.nn import OvercompleteISTA  # noqa: E402

layer = OvercompleteISTA(5, 4, eta_demo, lam_demo, dtype="float64")
layer.param("weight")[...] = W_small
dout = rng.standard_normal((6, 5))
ours, cache_ours = lm_ista_forward(x_small, W_small, eta_demo, lam_demo)
lib_out = layer(x_small)
layer.zero_grad()
lib_dx = layer.backward(dout)
ours_dx, ours_dW = lm_ista_backward(dout, cache_ours)
ista_lib_diff = max(np.abs(lib_out - ours).max(), np.abs(lib_dx - ours_dx).max(),
                    np.abs(layer.grad("weight") - ours_dW).max())
print(f"library vs ours (output, dx, dW): max difference {ista_lib_diff:.1e}")

# %% [markdown]
# ## 4. A tiny character model, trained here
#
# The text ships with Python: `pydoc_data.topics` holds the documentation
# topics that `help("if")` prints, about 465,000 characters. We split it by
# position (the last 10% is held out) and give each distinct character an id.
# The yardstick is a **bigram** model counted on the training text: it
# predicts the next character from the current one alone.

# %%
text = pydoc_corpus()
tok = CharTokenizer.from_text(text)
train_text, test_text = split_text(text, 0.1)
train_ids, test_ids = tok.encode(train_text), tok.encode(test_text)
bigram = bigram_cross_entropy(train_ids, test_ids, tok.vocab_size)
print(f"{len(text):,} characters, vocabulary {tok.vocab_size}; held-out bigram "
      f"cross-entropy {bigram:.3f} nats/char (uniform: {np.log(tok.vocab_size):.3f})")

# %%
block, batch = 32, 16
steps = 150 if FAST else 1500
model = CRATEGPT(tok.vocab_size, block, dim=48 if FAST else 96, depth=2 if FAST else 4,
                 heads=4, seed=0)
opt = AdamW(model, lr=5e-3, weight_decay=0.1)
sched = WarmupCosine(opt, warmup_steps=20, total_steps=steps, min_lr=5e-4)
data_rng = np.random.default_rng(1)
x_test, y_test = sequential_windows(test_ids, block, max_windows=100 if FAST else 400)


def test_loss(m):
    m.eval()
    loss = token_cross_entropy(m(x_test), y_test)[0]
    m.train()
    return loss


losses, test_losses = [], [(0, test_loss(model))]
t0 = time.time()
for step in range(1, steps + 1):
    x, y = random_windows(train_ids, block, batch, data_rng)
    loss, dlogits = token_cross_entropy(model(x), y)
    model.zero_grad()
    model.backward(dlogits)
    clip_grad_norm(model, 1.0)
    opt.step()
    sched.step()
    losses.append(loss)
    if step % (steps // 5) == 0:
        test_losses.append((step, test_loss(model)))
final_test = test_losses[-1][1]
print(f"{steps} steps in {time.time() - t0:.0f} s: held-out loss {final_test:.3f} nats/char "
      f"(bigram {bigram:.3f})")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(np.arange(1, steps + 1), losses, lw=0.6, label="training batches")
ax.plot(*zip(*test_losses), "o-", label="held-out text")
ax.axhline(bigram, color="k", ls="--", lw=1, label="bigram baseline")
ax.set_xlabel("step")
ax.set_ylabel("nats / character")
ax.legend()
fig.tight_layout()
save(fig, "06_char_model_loss.png", dpi=120)

# %% [markdown]
# ### Sampling
#
# `generate` samples one character at a time from the softmax of the last
# logits (a temperature below 1 sharpens it) and uses the one-tensor cache.

# %%
prompt = tok.encode("The ")[None]
sample = model.generate(prompt, 120 if not FAST else 60, temperature=0.8, rng=0)
sample_text = tok.decode(sample[0])
print(repr(sample_text))
uncached = model.generate(prompt, 30, temperature=0.8, rng=0, use_cache=False)
same_sample = bool((uncached == sample[:, :uncached.shape[1]]).all())

# %% [markdown]
# ### Which atoms fire
#
# Each ISTA layer writes every token as a sparse non-negative combination of
# the $m$ rows of its $W$. An atom is "about" something if the tokens that
# use it most have something in common. We run held-out text through the
# model, read the codes $c_2$ of the last layer, and for the atoms that fire
# most often print the characters (with a little left context) where each
# fires most strongly.

# %%
model.eval()
x_probe = x_test[: 40 if FAST else 200]
model(x_probe, capture=True)
codes = model.captured["code"][-1]                        # (n, T, m)
active_fraction = float((codes > 0).mean())
rates_per_atom = (codes > 0).mean(axis=(0, 1))            # (m,)
# atoms that fire on almost every token say little; rank the selective ones
# (active on 2% to 30% of tokens) by their strongest activation
peak = codes.max(axis=(0, 1))
selective = np.nonzero((rates_per_atom > 0.02) & (rates_per_atom < 0.3))[0]
top_atoms = selective[np.argsort(peak[selective])[::-1][:4]]
atom_contexts = {}
for atom in top_atoms:
    flat = codes[..., atom].reshape(-1)
    best = np.argsort(flat)[::-1][:6]
    contexts = []
    for i in best:
        row, col = divmod(int(i), codes.shape[1])
        left = tok.decode(x_probe[row, max(0, col - 8):col])
        contexts.append(f"{left}[{tok.decode(x_probe[row, col:col + 1])}]")
    atom_contexts[int(atom)] = contexts
    print(f"atom {atom:3d} (fires on {rates_per_atom[atom]:.0%} of tokens):",
          " | ".join(repr(c) for c in contexts))
print(f"last layer: {active_fraction:.1%} of code entries are non-zero")

# %% [markdown]
# ## Summary
#
# * A causal mask makes MSSA an approximate gradient step on the compression
#   of each token's **past**, $R_c(Z_{\le t})$; the masked operator computes all of
#   them at once.
# * Because $q = k = v$, generation caches **one** tensor per layer.
# * The language model's ISTA is two proximal steps from zero against an
#   overcomplete dictionary, decoded with the same weight; its backward is a
#   table of `d`-twins.
# * A small CRATE learns held-out documentation text (the full job beats the
#   bigram model by a wide margin), and its atoms can be read off the data.
#
# The full job: `python -m whitebox.train --task lm` (and `--task mlm` for
# the bidirectional model, `CRATEBERT`).
#
# ## Exercises
#
# 1. **Cache sizes.** For the official 12-layer shape (d 768, 12 layers,
#    block 1024) in float32, compute the bytes of a full generation cache for
#    one sequence in causal CRATE (`crate_cache_bytes`) and in a GPT-2 with
#    separate keys and values (`kv_cache_bytes`).
# 2. **More steps from zero.** Write `lasso_after(steps)`: run `steps`
#    proximal-gradient steps from $c = 0$ on the non-negative LASSO of
#    section 3 (for `x_small`, `W_small`, `eta_demo`, `lam_demo`) and return the
#    objective $\lambda\|c\|_1 + \tfrac12\|x - cW\|^2$ summed over tokens.
# 3. **The mask matters.** Build a `CRATEBERT` with the same arguments and seed
#    as `tiny_lm` and load `tiny_lm`'s weights into it. Change the last token of
#    `seq` and store in `gpt_change` and `bert_change` the largest change of the
#    logits at the *first* position for each model.

# %%
### BEGIN SOLUTION
crate_cache_bytes = 12 * 1024 * 768 * 4
kv_cache_bytes = 2 * crate_cache_bytes


def lasso_after(steps):
    c = np.zeros((x_small.shape[0], W_small.shape[0]))
    a = x_small @ W_small.T
    for _ in range(steps):
        c = np.maximum(c + eta_demo * (a - c @ W_small @ W_small.T) - eta_demo * lam_demo, 0)
    return float(lam_demo * c.sum() + 0.5 * ((x_small - c @ W_small) ** 2).sum())


bert = CRATEBERT(vocab_size=11, block_size=12, dim=16, depth=2, heads=4, dtype="float64", seed=0)
bert.load_state_dict(tiny_lm.state_dict())
changed = seq.copy()
changed[:, -1] = (changed[:, -1] + 1) % 11
gpt_change = np.abs(tiny_lm(changed)[:, 0] - tiny_lm(seq)[:, 0]).max()
bert_change = np.abs(bert(changed)[:, 0] - bert(seq)[:, 0]).max()
### END SOLUTION

# %%
print(f"cache bytes: CRATE {crate_cache_bytes:,}, key/value {kv_cache_bytes:,}")
assert crate_cache_bytes == 37_748_736, \
    f"exercise 1: the CRATE cache is {crate_cache_bytes:,} bytes, expected 37,748,736"
assert kv_cache_bytes == 2 * crate_cache_bytes, \
    f"exercise 1: the key/value cache is {kv_cache_bytes:,} bytes, expected twice CRATE's"
objectives = [lasso_after(s) for s in (1, 2, 5, 50)]
print("LASSO objective after 1, 2, 5, 50 steps from zero:", np.round(objectives, 4))
two_steps = (lam_demo * cache_ours["c2"].sum()
             + 0.5 * ((x_small - cache_ours["c2"] @ W_small) ** 2).sum())
assert abs(objectives[1] - two_steps) < 1e-10, \
    (f"exercise 2: the objective after two steps is {objectives[1]:.6f}, the layer's code "
     f"gives {two_steps:.6f} (off by {abs(objectives[1] - two_steps):.1e})")
assert objectives[0] > objectives[1] > objectives[2] > objectives[3], \
    f"exercise 2: proximal steps must lower the LASSO objective, got {objectives}"
assert gpt_change == 0, \
    f"exercise 3: the causal model's first output moved by {gpt_change:.1e} when the last token changed"
assert bert_change > 1e-6, \
    f"exercise 3: the bidirectional model's first output moved by only {bert_change:.1e}"

# %% [markdown]
# ## Checks (running this file is its test)

# %%
assert past_grad_err < 1e-6, \
    f"the row formula vs finite differences of R_c(Z_<=t): relative error {past_grad_err:.1e} > 1e-6"
assert prefix_err < 1e-12, f"outputs depend on future tokens: max |diff| {prefix_err:.1e}"
assert cache_err < 1e-12, f"generation with the cache vs without: max |diff| {cache_err:.1e}"
assert cache_shapes == [(2, 4, 12, 4)] * 2, \
    f"cache shapes {cache_shapes}, expected one (B, K, T, p) = (2, 4, 12, 4) per layer"
assert max(ista_errors.values()) < 1e-7, \
    f"the two-step ISTA backward fails the gradient check: relative errors {ista_errors}"
assert ista_lib_diff < 1e-12, \
    f"our two-step ISTA vs whitebox.nn.OvercompleteISTA: max |diff| {ista_lib_diff:.1e}"
try:   # a backward without the Gram term must be caught
    check_backward(lambda x, W: lm_ista_forward(x, W, eta_demo, lam_demo),
                   lambda d, c: (lm_ista_backward(d, c)[0],
                                 lm_ista_backward(d, c)[1]
                                 + c["eta"] * (c["c1"].T @ (d @ c["W"].T * (c["u2"] > 0))
                                               + (d @ c["W"].T * (c["u2"] > 0)).T @ c["c1"])
                                 @ c["W"]),
                   (x_small, W_small))
    raise AssertionError("a wrong backward passed the gradient check")
except GradientCheckError:
    pass
assert final_test < test_losses[0][1] - 1.0, \
    f"held-out loss {final_test:.3f} is not 1 nat below its start {test_losses[0][1]:.3f}"
assert FAST or final_test < bigram, \
    f"held-out loss {final_test:.3f} does not beat the bigram model's {bigram:.3f}"
assert same_sample, "sampling twice from the same seed gave different text"
assert len(sample_text) > len("The "), f"the sample {sample_text!r} added nothing to the prompt"
assert 0.0 < active_fraction < 0.9, \
    f"{active_fraction:.1%} of the last layer's code is non-zero: expected sparse, not empty"
assert len(atom_contexts) == 4, f"contexts for {len(atom_contexts)} atoms, expected 4"
assert (OUT / "06_char_model_loss.png").exists(), f"no figure {OUT / '06_char_model_loss.png'}"
print(f"all checks passed in {time.time() - t_start:.1f} s")
