"""Modules: parameter-holding wrappers around whitebox.functional."""
from .crate_layers import CRATELayer, ISTA, MSSA, PreNorm
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, Patchify, ReLU,
                     Softmax, Unpatchify)
from .decoder_layers import DecoderLayer, DecoderMSSA
from .patch_embed import PatchConv, PatchEmbed
from .module import Module, ModuleList, Sequential
from .lm_layers import LMAttention, LMBlock, OvercompleteISTA

__all__ = ["Module", "Sequential", "ModuleList", "Linear", "LayerNorm", "ReLU", "GELU",
           "Softmax", "Dropout", "Embedding", "Patchify", "Unpatchify", "Identity",
           "PreNorm", "MSSA", "ISTA", "CRATELayer",
           "DecoderMSSA", "DecoderLayer", "PatchConv", "PatchEmbed",
           "LMAttention", "OvercompleteISTA", "LMBlock"]
