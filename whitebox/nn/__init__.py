"""Modules: parameter-holding wrappers around whitebox.functional."""
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, Patchify, ReLU,
                     Softmax)
from .module import Module, ModuleList, Sequential

__all__ = ["Module", "Sequential", "ModuleList", "Linear", "LayerNorm", "ReLU", "GELU",
           "Softmax", "Dropout", "Embedding", "Patchify", "Identity"]
from .crate_layers import CRATELayer, ISTA, MSSA, PreNorm

__all__ += ["PreNorm", "MSSA", "ISTA", "CRATELayer"]
