"""Modules: parameter-holding wrappers around whitebox.functional."""
from .alpha_layers import AlphaLayer
from .block import ResidualBlock
from .crate_layers import CRATELayer, ISTA, MSSA, OvercompleteISTA, PreNorm
from .decoder_layers import DecoderLayer
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, Patchify, ReLU,
                     ShiftedPatches, Softmax, Unpatchify)
from .lm_layers import LMAttention, LMBlock
from .module import Module, ModuleList, Sequential
from .patch_embed import PatchConv, PatchEmbed
from .transformer import MLP, MultiHeadAttention, TransformerBlock

__all__ = ["Module", "Sequential", "ModuleList", "Linear", "LayerNorm", "ReLU", "GELU",
           "Softmax", "Dropout", "Embedding", "Patchify", "Unpatchify", "ShiftedPatches",
           "Identity",
           "PreNorm", "MSSA", "ISTA", "OvercompleteISTA", "CRATELayer",
           "DecoderLayer", "PatchConv", "PatchEmbed",
           "LMAttention", "LMBlock", "AlphaLayer", "ResidualBlock",
           "DINOHead", "SimDINOHead", "WeightNormLinear", "L2Normalize", "BatchNorm1d"]
from .ssl_heads import BatchNorm1d, DINOHead, L2Normalize, SimDINOHead, WeightNormLinear
