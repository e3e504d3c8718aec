"""The loss terms: exact, Gram-matrix and FFT-relaxed. One term per module."""

from ._checks import METHODS
from .barlow_twins import barlow_twins_loss, barlow_twins_terms
from .circular import circular_correlation
from .covariance import covariance_loss
from .cross_correlation import batch_standardize, cross_correlation
from .invariance import invariance_loss
from .variance import variance_loss
from .vicreg import vicreg_loss, vicreg_terms

__all__ = [
    "METHODS",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "batch_standardize",
    "circular_correlation",
    "covariance_loss",
    "cross_correlation",
    "invariance_loss",
    "variance_loss",
    "vicreg_loss",
    "vicreg_terms",
]
