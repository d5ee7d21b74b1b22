"""Per-layer compression, measured the way the official CRATE figures measure it.

    Rc_meas(Z | U) = mean over the batch of
                     sum_k 1/2 logdet(I_N + p/(N eps2) W_k W_k^T),
    W_k = rows of Z U_k, each scaled to unit length,      eps2 = 0.01.

Differences from :func:`whitebox.rate.compression_rate`: every head-token
vector is normalised first (so the number does not depend on the feature
scale), and ``eps2`` is epsilon SQUARED, the official convention (0.01 means
epsilon = 0.1). Use it to plot per-layer curves from whitebox beside the
paper's (CRATE-S on ImageNet falls from about 1100 to 700 over 12 layers).
It is computed in float64, under the precision rule of :mod:`whitebox.rate.gram`.
"""

from ..backend import get_array_module
from ..functional._checks import check_bases, check_int, check_real, check_tokens
from .compression import project_heads
from .gram import gram_logdet_forward, rate_scale


def bases_from_qkv(weight, num_heads):
    """The subspace bases U (K, d, p) held by a CRATE attention's qkv weight.

    The official layer computes w = x @ W^T with W of shape (K p, d) and gives
    head k the columns k p .. (k+1) p of w, so U_k = W[k p:(k+1) p].T.
    """
    xp = get_array_module(weight)
    num_heads = check_int("num_heads", num_heads, 1)
    if weight.ndim != 2 or weight.shape[0] % num_heads:
        raise ValueError(f"weight must have shape (K p, d) with K = num_heads = {num_heads} "
                         f"dividing its first axis, got shape {tuple(weight.shape)}")
    Kp, d = weight.shape
    p = Kp // num_heads
    return xp.ascontiguousarray(weight.reshape(num_heads, p, d).transpose(0, 2, 1))  # (K, d, p)


def measure_compression(Z, U, eps2=0.01):
    """The official per-layer compression measurement (see the module docstring).

    Inputs: Z (N, d) or (B, N, d), e.g. LayerNorm(Z^l), the input to a layer's
    qkv; U (K, d, p); eps2 epsilon squared (official default 0.01).
    Returns: a Python float (computed in float64).
    """
    xp = check_tokens("Z", Z)
    check_bases(U, Z)
    eps2 = check_real("eps2", eps2, 0.0, low_open=True)
    if Z.ndim not in (2, 3):
        raise ValueError(f"Z must have shape (N, d) or (B, N, d), got {tuple(Z.shape)}")
    Z3 = Z.astype("float64", copy=False).reshape(-1, *Z.shape[-2:])   # (B, N, d)
    W = project_heads(Z3, U.astype("float64", copy=False))             # (B, K, N, p)
    norms = xp.sqrt((W * W).sum(axis=-1, keepdims=True))               # (B, K, N, 1)
    W = W / xp.where(norms > 0, norms, 1.0)   # an all-zero head-token stays zero
    N, p = W.shape[-2:]
    h, _ = gram_logdet_forward(W, rate_scale(p, N, eps2 ** 0.5, "sqrt(eps2)"))  # (B, K)
    return float(h.sum(axis=-1).mean())


def layer_measures(model, inputs, eps2=0.01):
    """Per layer l of a model: Rc of its MSSA input on the layer's subspaces, and sparsity.

    Works for any model whose ``forward(inputs, capture=True)`` fills
    ``model.captured`` ("mssa_in": LN1(Z^l), "code": the sparse code of the
    ISTA step, one entry per layer) and whose ``subspaces(l)`` returns U
    (K, d, p): CRATE, CRATE-alpha, CRATE-MAE's encoder, the language models.
    Rc follows :func:`measure_compression` (official convention); the
    non-zero fraction is 1 - (fraction of exact zeros of the code), the
    paper's sparsity plot. Returns: (rc list, nonzero list), one float per layer.
    """
    model.eval()
    model.forward(inputs, capture=True)
    captured = model.captured
    depth = len(captured["code"])
    rc = [measure_compression(captured["mssa_in"][l], model.subspaces(l), eps2)
          for l in range(depth)]
    nonzero = [float((captured["code"][l] != 0).mean()) for l in range(depth)]
    model.captured = None          # drop the captured features: they are large
    return rc, nonzero
