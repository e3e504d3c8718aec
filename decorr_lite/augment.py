"""Two-view augmentation for CIFAR-10 on batches of tensors (CPU or GPU), with kornia.

The recipe of VICReg / Barlow Twins as solo-learn runs them on CIFAR: random resized crop
(scale 0.2-1), horizontal flip, colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
hue 0.1, p = 0.8), grayscale (p = 0.2), then normalisation by the dataset's statistics. Each view
is drawn independently, so the two views of an image differ.

kornia draws its random parameters from torch's global generator; ``TwoViews`` forks that
generator for the call when given a seed, so a seeded call is reproducible and leaves the
caller's random state untouched.
"""

from __future__ import annotations

import torch
from torch import nn

# Per-channel statistics of the CIFAR-10 training split (values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def ssl_augmentation(
    *,
    size: int = 32,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
) -> nn.Module:
    """One random view: float images in [0, 1], shape (N, 3, H, W) -> normalised (N, 3, size, size)."""
    try:
        import kornia.augmentation as K
    except ImportError as err:  # the losses need only torch; the pipeline needs the extras
        raise ImportError("augmentation needs kornia: pip install 'decorr-lite[train]'") from err

    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=crop_scale),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*jitter, p=jitter_p),
        K.RandomGrayscale(p=grayscale_p),
        K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
    )


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """uint8 or [0, 1] float images -> normalised float32, without augmentation (for evaluation)."""
    x = to_float(images)
    mean = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1]; float images are passed through."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


class TwoViews(nn.Module):
    """Two independent random views of each image of a batch.

    ``TwoViews()(images, seed=s)`` returns ``(view1, view2)``, each (N, 3, 32, 32) float32 on
    the images' device. With a seed, the same call gives the same views.
    """

    def __init__(self, **recipe) -> None:
        super().__init__()
        self.view = ssl_augmentation(**recipe)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_float(images)
        if seed is None:
            return self.view(x), self.view(x)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.view(x), self.view(x)
