"""Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW (no amsgrad).

With t the step count, b1, b2 = betas and m, v starting at 0:

    Adam:   g = grad + wd * p                        (coupled L2 decay)
    AdamW:  p = p - lr * wd * p,   g = grad          (decoupled decay)
    m = b1 m + (1 - b1) g
    v = b2 v + (1 - b2) g^2
    p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

Decay applies only to the parameters :func:`decay_mask` marks.
"""
import math

from ..backend import get_array_module
from .optimizer import DEFAULT_NO_DECAY, HyperParameter, Optimizer, check_betas


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, grads=None,
    no_decay=DEFAULT_NO_DECAY).

    Weight decay is coupled (added to the gradient), as in torch.optim.Adam.
    Buffers: ``exp_avg`` (m) and ``exp_avg_sq`` (v) per parameter.
    """

    buffer_names = ("exp_avg", "exp_avg_sq")
    decoupled = False
    betas = HyperParameter(check_betas)
    eps = HyperParameter()
    weight_decay = HyperParameter()

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 grads=None, no_decay=DEFAULT_NO_DECAY):
        super().__init__(params, lr, grads=grads, no_decay=no_decay)
        self.hyper = {"betas": betas, "eps": eps, "weight_decay": weight_decay}

    def _update(self, name, p, g, bufs, weight_decay):
        b1, b2 = self.betas
        t = self.step_count
        if weight_decay:
            if self.decoupled:
                p *= 1.0 - self.lr * weight_decay
            else:
                g = g + weight_decay * p   # a new array: the model's gradient stays intact
        xp = get_array_module(p)
        m, v = bufs["exp_avg"], bufs["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        step_size = self.lr / (1.0 - b1 ** t)
        denom = xp.sqrt(v) / math.sqrt(1.0 - b2 ** t) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, grads=None,
    no_decay=DEFAULT_NO_DECAY).

    Decoupled weight decay: p -= lr * wd * p before the Adam step, as in
    torch.optim.AdamW.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 grads=None, no_decay=DEFAULT_NO_DECAY):
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         grads=grads, no_decay=no_decay)
