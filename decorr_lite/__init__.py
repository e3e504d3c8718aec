"""decorr_lite: exact and FFT-relaxed decorrelation losses for self-supervised learning.

VICReg (Bardes, Ponce, LeCun 2022), Barlow Twins (Zbontar et al. 2021) and the FFT relaxation
of Shigeto, Shimbo, Yoshikawa, Takeuchi (CVPR 2023). Every loss takes (n, d) embeddings and
returns a 0-dim tensor that autograd differentiates.
"""

from . import losses
from .losses import *  # noqa: F403  (the losses' public names, listed once in losses/__init__.py)

__version__ = "0.3.0"
__all__ = ["losses", *losses.__all__]
