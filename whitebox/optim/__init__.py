"""Optimizers, learning-rate schedules and gradient clipping.

All update parameters in place on NumPy or CuPy; see
:mod:`whitebox.optim.optimizer` for how parameters are given and which of
them receive weight decay.
"""
from .adam import Adam, AdamW
from .clip import clip_grad_norm
from .lion import Lion
from .optimizer import DEFAULT_NO_DECAY, Optimizer, decay_mask
from .schedules import Schedule, StepDecay, WarmupCosine
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Lion", "DEFAULT_NO_DECAY", "decay_mask",
           "clip_grad_norm", "Schedule", "WarmupCosine", "StepDecay"]
