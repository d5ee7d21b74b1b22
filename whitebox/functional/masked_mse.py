"""The masked-autoencoding loss: squared error per patch, averaged over removed patches.

With pred and target (B, L, P) and the mask m (B, L), 1 = removed,

    e_bl = 1/P sum_j (pred_blj - t_blj)^2,      loss = sum_bl m_bl e_bl / sum_bl m_bl.

With ``norm_pix`` the target is each patch normalised by its own mean and
UNBIASED variance, t = (x - mean) / sqrt(var + 1e-6), as the official code does.
"""
NORM_PIX_EPS = 1e-6


def masked_mse_forward(pred, patches, mask, norm_pix=False):
    """Inputs: pred (B, L, P); patches (B, L, P) the target pixels; mask (B, L) 0/1,
    at least one 1; norm_pix: normalise each target patch first.
    Returns: loss (a 0-d array), cache.
    """
    P = patches.shape[-1]
    if norm_pix:
        centred = patches - patches.mean(axis=-1, keepdims=True)
        var = (centred * centred).sum(axis=-1, keepdims=True) / (P - 1)
        std = (var + NORM_PIX_EPS) ** 0.5                       # (B, L, 1)
        target = centred / std
    else:
        std, target = None, patches
    diff = pred - target                                        # (B, L, P)
    per_patch = (diff * diff).mean(axis=-1)                     # (B, L)
    removed = mask.sum()
    loss = (per_patch * mask).sum() / removed
    return loss, (diff, mask, removed, std, target if norm_pix else None)


def masked_mse_backward(dloss, cache):
    """dpred = dloss 2 m (pred - t) / (P sum m);  dt = -dpred;
    through norm_pix (t = (x - mean) / std, unbiased var, tn = t):
    dx = (dt - mean(dt) - tn sum(dt tn) / (P - 1)) / std.
    dloss: a number or a 0-d array.
    Returns: dpred (B, L, P), dpatches (B, L, P).
    """
    diff, mask, removed, std, normed = cache
    P = diff.shape[-1]
    dpred = diff * (mask[:, :, None] * (2.0 * dloss / (P * removed)))
    dtarget = -dpred
    if std is None:
        return dpred, dtarget
    dpatches = dtarget - dtarget.mean(axis=-1, keepdims=True)
    dpatches -= normed * ((dtarget * normed).sum(axis=-1, keepdims=True) / (P - 1))
    dpatches /= std
    return dpred, dpatches
