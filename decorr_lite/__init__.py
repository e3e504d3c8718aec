"""decorr_lite: exact and FFT-relaxed decorrelation losses for self-supervised learning.

VICReg (Bardes, Ponce, LeCun 2022), Barlow Twins (Zbontar et al. 2021) and the FFT relaxation
of Shigeto, Shimbo, Yoshikawa, Takeuchi (CVPR 2023). Every loss takes (n, d) embeddings and
returns a 0-dim tensor that autograd differentiates.
"""

from . import losses
from .losses import (
    IMPLEMENTATIONS,
    LOSSES,
    METHODS,
    BarlowTwinsLoss,
    VICRegLoss,
    barlow_twins_loss,
    barlow_twins_terms,
    batch_standardize,
    circular_correlation,
    covariance_loss,
    cross_correlation,
    invariance_loss,
    loss_spec,
    variance_loss,
    vicreg_loss,
    vicreg_terms,
)

__version__ = "0.2.0"
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
    "losses",
    "variance_loss",
    "vicreg_loss",
    "vicreg_terms",
]
