"""The loss terms: exact, Gram-matrix and FFT-relaxed. One loss or term per module; ``registry``
lists the losses, ``methods`` the ways to compute them, ``reference`` the relaxation written for
reading."""

from .barlow_twins import BarlowTwinsLoss, barlow_twins_loss, barlow_twins_terms
from .circular import circular_correlation
from .covariance import covariance_loss
from .cross_correlation import batch_standardize, cross_correlation
from .invariance import invariance_loss
from .methods import IMPLEMENTATIONS, METHODS
from .registry import LOSSES, loss_spec
from .variance import variance_loss
from .vicreg import VICRegLoss, vicreg_loss, vicreg_terms

__all__ = [
    "IMPLEMENTATIONS",
    "LOSSES",
    "METHODS",
    "BarlowTwinsLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "batch_standardize",
    "circular_correlation",
    "covariance_loss",
    "cross_correlation",
    "invariance_loss",
    "loss_spec",
    "variance_loss",
    "vicreg_loss",
    "vicreg_terms",
]
