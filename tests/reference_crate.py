"""An independent reference for CRATE, written from the paper's equations, not from whitebox.

- ``numpy_crate_logits``: plain loops over batch items and heads, the three
  ISTA products as the official code writes them, LayerNorm from its formula.
"""
import numpy as np


def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _patches(img, p):
    B, C, H, W = img.shape
    out = np.zeros((B, (H // p) * (W // p), p * p * C), dtype=img.dtype)
    for b in range(B):
        for i in range(H // p):
            for j in range(W // p):
                k = 0
                for r in range(p):
                    for c in range(p):
                        for ch in range(C):
                            out[b, i * (W // p) + j, k] = img[b, ch, i * p + r, j * p + c]
                            k += 1
    return out


def numpy_crate_logits(sd, images, depth, heads, patch, pool="cls", eta=0.1, lam=0.1):
    x = _patches(images, patch)
    x = _ln(x, sd["to_patch_embedding.1.weight"], sd["to_patch_embedding.1.bias"])
    x = x @ sd["to_patch_embedding.2.weight"].T + sd["to_patch_embedding.2.bias"]
    x = _ln(x, sd["to_patch_embedding.3.weight"], sd["to_patch_embedding.3.bias"])
    B = x.shape[0]
    cls = np.repeat(sd["cls_token"], B, axis=0)
    x = np.concatenate([cls, x], axis=1) + sd["pos_embedding"]
    for l in range(depth):
        pre = f"transformer.layers.{l}."
        h = _ln(x, sd[pre + "0.norm.weight"], sd[pre + "0.norm.bias"])
        Wqkv = sd[pre + "0.fn.qkv.weight"]
        p = Wqkv.shape[0] // heads
        outs = np.zeros((B, x.shape[1], heads * p))
        for b in range(B):
            w = h[b] @ Wqkv.T
            for k in range(heads):
                wk = w[:, k * p:(k + 1) * p]
                S = wk @ wk.T * p ** -0.5
                A = np.exp(S - S.max(1, keepdims=True))
                A /= A.sum(1, keepdims=True)
                outs[b, :, k * p:(k + 1) * p] = A @ wk
        if pre + "0.fn.to_out.0.weight" in sd:
            outs = outs @ sd[pre + "0.fn.to_out.0.weight"].T + sd[pre + "0.fn.to_out.0.bias"]
        x = x + outs
        h = _ln(x, sd[pre + "1.norm.weight"], sd[pre + "1.norm.bias"])
        W = sd[pre + "1.fn.weight"]
        grad_1 = (h @ W.T) @ W
        grad_2 = h @ W
        x = np.maximum(h + eta * (grad_2 - grad_1) - eta * lam, 0)
    pooled = x[:, 0] if pool == "cls" else x.mean(1)
    pooled = _ln(pooled, sd["mlp_head.0.weight"], sd["mlp_head.0.bias"])
    return pooled @ sd["mlp_head.1.weight"].T + sd["mlp_head.1.bias"]
