"""Data sources: synthetic models of the theory and small real datasets."""
from .subspace import subspace_bases, subspace_mixture
