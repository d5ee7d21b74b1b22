"""Models built from whitebox layers."""
from .crate import CRATE, crate_base, crate_large, crate_small, crate_tiny
from .crate_lm import CRATEBERT, CRATEGPT, mask_tokens

__all__ = ["CRATE", "crate_tiny", "crate_small", "crate_base", "crate_large",
           "CRATEGPT", "CRATEBERT", "mask_tokens"]
