"""whitebox: white-box transformers (CRATE) in NumPy/CuPy with hand-written gradients."""
from . import backend, checkpoint, data, functional, gradcheck, losses, models, nn, optim, rate
from .backend import get_array_module, gpu_available, to_device, to_numpy

__version__ = "0.1.0"
