"""Models built from whitebox layers."""
from .crate import CRATE, crate_base, crate_large, crate_small, crate_tiny
from .crate_lm import CRATEBERT, CRATEGPT, mask_tokens
from .crate_mae import CRATEMAE, mae_crate_base, mae_crate_large, mae_crate_small, mae_crate_tiny

__all__ = ["CRATE", "crate_tiny", "crate_small", "crate_base", "crate_large",
           "CRATEMAE", "mae_crate_tiny", "mae_crate_small", "mae_crate_base", "mae_crate_large",
           "CRATEGPT", "CRATEBERT", "mask_tokens"]
