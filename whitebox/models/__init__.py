"""Models built from whitebox layers."""
from .crate import CRATE, crate_base, crate_large, crate_small, crate_tiny
from .redunet import ReduNet

__all__ = ["CRATE", "crate_tiny", "crate_small", "crate_base", "crate_large", "ReduNet"]
