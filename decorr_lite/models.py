"""Encoders and the VICReg projector for 32x32 images.

- ``SmallConvNet``: four conv-BN-ReLU stages and global average pooling. Built for a laptop CPU,
  where a CIFAR ResNet-18 is far too slow for a class (the two's time per step: docs/pipeline.md).
- ``ResNet18CIFAR``: the CIFAR variant of ResNet-18 (3x3 stem, no max-pool; 512 features),
  the backbone of the solo-learn CIFAR baselines. For GPU users.
- ``Projector``: VICReg's expander, Linear-BN-ReLU, Linear-BN-ReLU, Linear, to width d.
"""

from __future__ import annotations

from torch import nn

ENCODERS = ("small", "resnet18")


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallConvNet(nn.Module):
    """32x32x3 -> (width * 8) features: stages at 32, 16, 8, 4 pixels, then average pooling.

    ``stem_stride=2``: the first convolution at stride 2, so the stages run at 16, 8, 4, 2 pixels
    and a step costs about half as much on a CPU (the classroom's setting: docs/training.md)."""

    def __init__(self, width: int = 32, stem_stride: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv_bn_relu(3, width, stride=stem_stride),
            conv_bn_relu(width, 2 * width, stride=2),
            conv_bn_relu(2 * width, 4 * width, stride=2),
            conv_bn_relu(4 * width, 8 * width, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 8 * width

    def forward(self, x):
        return self.layers(x)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.shortcut(x)).relu()


class ResNet18CIFAR(nn.Module):
    """ResNet-18 (He et al. 2016) with the CIFAR stem: 3x3 conv, stride 1, no max-pool."""

    def __init__(self) -> None:
        super().__init__()
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(conv_bn_relu(3, 64), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = 512

    def forward(self, x):
        return self.layers(x)


class Projector(nn.Sequential):
    """VICReg's projector ("expander"): in_dim -> hidden -> hidden -> dim, BN and ReLU between."""

    def __init__(self, in_dim: int, dim: int, hidden_dim: int | None = None) -> None:
        hidden_dim = hidden_dim or dim
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, dim),
        )


class SSLModel(nn.Module):
    """An encoder (backbone) and a projector; ``forward`` gives the embeddings the loss sees,
    ``features`` the backbone representation that kNN and the linear probe evaluate."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def features(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.projector(self.encoder(x))


def model_for(settings) -> SSLModel:
    """The model a run's settings describe: a ``TrainConfig``, or the ``config`` dict a stored run
    holds (runs stored before ``stem_stride`` existed have a stride-1 stem)."""
    get = settings.get if isinstance(settings, dict) else lambda name, default=None: getattr(settings, name, default)
    return build_model(get("encoder"), get("dim"), get("hidden_dim"), get("width"), get("stem_stride", 1))


def build_model(
    encoder: str = "small", dim: int = 1024, hidden_dim: int | None = None, width: int = 32, stem_stride: int = 1
) -> SSLModel:
    """``encoder`` is ``"small"`` (``SmallConvNet(width, stem_stride)``) or ``"resnet18"``; ``dim`` is d."""
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2 (the first convolution's stride), got {stem_stride!r}")
    if encoder == "small":
        backbone = SmallConvNet(width, stem_stride)
    elif encoder == "resnet18":
        if stem_stride != 1:
            raise ValueError(
                "stem_stride=2 is a setting of the small encoder; the CIFAR ResNet-18 keeps its stride-1 stem"
            )
        backbone = ResNet18CIFAR()
    else:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2 (the embedding width d), got {dim!r}")
    return SSLModel(backbone, Projector(backbone.out_dim, dim, hidden_dim))
