"""Models built from whitebox layers."""
from .crate import CRATE, crate_base, crate_large, crate_small, crate_tiny
from .crate_alpha import (CRATEAlpha, crate_alpha_base16, crate_alpha_large14, crate_alpha_small,
                          crate_alpha_tiny)
from .crate_lm import CRATEBERT, CRATEGPT
from .crate_mae import CRATEMAE, mae_crate_base, mae_crate_large, mae_crate_small, mae_crate_tiny
from .redunet import ReduNet
from .vit import ViT, vit_base, vit_small, vit_tiny
from .gpt import GPT, gpt2
from .mae import MAE, mae_vit_base
from .bert import BERT, bert_base

__all__ = ["CRATE", "crate_tiny", "crate_small", "crate_base", "crate_large",
           "CRATEAlpha", "crate_alpha_tiny", "crate_alpha_small", "crate_alpha_base16",
           "crate_alpha_large14",
           "CRATEMAE", "mae_crate_tiny", "mae_crate_small", "mae_crate_base", "mae_crate_large",
           "CRATEGPT", "CRATEBERT", "ReduNet",
           "ViT", "vit_tiny", "vit_small", "vit_base", "GPT", "gpt2", "MAE", "mae_vit_base",
           "BERT", "bert_base"]
