"""Lion (EvoLved Sign Momentum; Chen et al., 2023).

With b1, b2 = betas and m starting at 0:

    update = sign(b1 m + (1 - b1) g)
    p      = p - lr (update + wd p)          (decoupled decay, decayed params only)
    m      = b2 m + (1 - b2) g

Every coordinate moves by exactly lr per step (before decay), so Lion wants
a learning rate 3-10x smaller than AdamW's and a weight decay as much larger.
"""
from ..backend import get_array_module
from .optimizer import DEFAULT_NO_DECAY, HyperParameter, Optimizer, check_betas


class Lion(Optimizer):
    """Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, grads=None,
    no_decay=DEFAULT_NO_DECAY).

    Buffers: ``exp_avg`` (m) per parameter.
    """

    buffer_names = ("exp_avg",)
    betas = HyperParameter(check_betas)
    weight_decay = HyperParameter()

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, grads=None,
                 no_decay=DEFAULT_NO_DECAY):
        super().__init__(params, lr, grads=grads, no_decay=no_decay)
        self.hyper = {"betas": betas, "weight_decay": weight_decay}

    def _update(self, name, p, g, bufs, weight_decay):
        xp = get_array_module(p)
        b1, b2 = self.betas
        m = bufs["exp_avg"]
        # the sign looks at an interpolation with b1, the memory keeps b2
        update = xp.sign(b1 * m + (1.0 - b1) * g)
        if weight_decay:
            update += weight_decay * p
        p -= self.lr * update
        m *= b2
        m += (1.0 - b2) * g
