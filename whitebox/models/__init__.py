"""Models built from whitebox layers."""
from .crate import CRATE, crate_base, crate_large, crate_small, crate_tiny
from .crate_alpha import (CRATEAlpha, crate_alpha_base16, crate_alpha_large14,
                          crate_alpha_small, crate_alpha_tiny)

__all__ = ["CRATE", "crate_tiny", "crate_small", "crate_base", "crate_large",
           "CRATEAlpha", "crate_alpha_tiny", "crate_alpha_small", "crate_alpha_base16",
           "crate_alpha_large14"]
