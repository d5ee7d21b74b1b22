"""Stochastic gradient descent with momentum, as torch.optim.SGD (dampening 0).

    g   = grad + wd * p                  (coupled L2 decay, decayed params only)
    buf = momentum * buf + g             (buf starts at 0, so buf_1 = g_1)
    g   = g + momentum * buf   (nesterov)   or   g = buf   (heavy ball)
    p  -= lr * g
"""
import numpy as np

from .optimizer import DEFAULT_NO_DECAY, Optimizer, check_hyper


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, grads=None,
    no_decay=DEFAULT_NO_DECAY).

    params: a Module, or a dict name -> array with ``grads`` the matching dict.
    Buffers: ``momentum_buffer`` per parameter (zeros until the first step),
    only while momentum > 0; plain SGD keeps no state.
    """

    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 grads=None, no_decay=DEFAULT_NO_DECAY):
        super().__init__(params, lr, grads=grads, no_decay=no_decay)
        self.hyper = self.make_hyper(momentum=momentum, nesterov=nesterov,
                                     weight_decay=weight_decay)

    @staticmethod
    def make_hyper(momentum, nesterov, weight_decay):
        momentum = check_hyper("momentum", momentum)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0.0")
        return {"momentum": momentum, "nesterov": bool(nesterov),
                "weight_decay": check_hyper("weight_decay", weight_decay)}

    def buffers_for(self, hyper):
        # read from the hyper-parameters, not fixed at construction: loading a
        # state_dict can switch momentum on or off
        return self.buffer_names if hyper["momentum"] else ()

    def _update(self, name, p, g, bufs, weight_decay):
        if weight_decay:
            g = g + weight_decay * p      # a new array: never overwrite the model's gradient
        momentum = self.hyper["momentum"]
        if momentum:
            buf = bufs["momentum_buffer"]
            buf *= momentum
            buf += g
            g = g + momentum * buf if self.hyper["nesterov"] else buf
        p -= self.lr * g
