"""Stochastic gradient descent with momentum, as torch.optim.SGD (dampening 0).

    g   = grad + wd * p                  (coupled L2 decay, decayed params only)
    buf = momentum * buf + g             (buf starts at 0, so buf_1 = g_1)
    g   = g + momentum * buf   (nesterov)   or   g = buf   (heavy ball)
    p  -= lr * g
"""
from ..functional._checks import check_flag
from .optimizer import DEFAULT_NO_DECAY, HyperParameter, Optimizer


class SGD(Optimizer):
    """SGD(params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, grads=None,
    no_decay=DEFAULT_NO_DECAY).

    params: a Module, or a dict name -> array with ``grads`` the matching dict.
    Buffers: ``momentum_buffer`` per parameter (zeros until the first step),
    only while momentum > 0; plain SGD keeps no state.
    """

    buffer_names = ("momentum_buffer",)
    momentum = HyperParameter()
    nesterov = HyperParameter(check_flag)
    weight_decay = HyperParameter()

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 grads=None, no_decay=DEFAULT_NO_DECAY):
        super().__init__(params, lr, grads=grads, no_decay=no_decay)
        self.hyper = {"momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}

    @staticmethod
    def check_together(hyper):
        if hyper.get("nesterov") and hyper.get("momentum") == 0.0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0.0")

    def buffers_for(self, hyper):
        # read from the hyper-parameters, not fixed at construction: loading a
        # state_dict can switch momentum on or off
        return self.buffer_names if hyper["momentum"] else ()

    def _update(self, name, p, g, bufs, weight_decay):
        if weight_decay:
            g = g + weight_decay * p      # a new array: never overwrite the model's gradient
        momentum = self.momentum
        if momentum:
            buf = bufs["momentum_buffer"]
            buf *= momentum
            buf += g
            g = g + momentum * buf if self.nesterov else buf
        p -= self.lr * g
