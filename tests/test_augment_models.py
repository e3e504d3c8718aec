"""Two-view augmentation and the models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decorr_lite.augment import CIFAR10_MEAN, CIFAR10_STD, TwoViews, normalize, to_float
from decorr_lite.models import Projector, build_model


def images(n=8, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_two_views_shapes_and_independence():
    v1, v2 = TwoViews()(images(), seed=0)
    assert v1.shape == v2.shape == (8, 3, 32, 32) and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)  # the two views are drawn independently


def test_seeded_views_are_reproducible_and_leave_global_rng_alone():
    augment = TwoViews()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = augment(images(), seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = augment(images(), seed=7)
    c = augment(images(), seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_recipe_without_randomness_is_just_normalisation():
    # a constant-colour image is unchanged by crops and flips; no jitter, no grayscale
    x = torch.empty(4, 3, 32, 32, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 200, 100, 30
    augment = TwoViews(jitter_p=0.0, grayscale_p=0.0)
    v1, v2 = augment(x, seed=0)
    expected = (x.float() / 255 - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(v1, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v2, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normalize(x), expected)


def test_grayscale_always_gives_equal_channels():
    v1, _ = TwoViews(grayscale_p=1.0, mean=(0, 0, 0), std=(1, 1, 1))(images(), seed=1)
    torch.testing.assert_close(v1[:, 0], v1[:, 1])
    torch.testing.assert_close(v1[:, 1], v1[:, 2])


def test_flip_and_crop_change_the_geometry():
    x = images(16, seed=3)
    v1, _ = TwoViews(jitter_p=0.0, grayscale_p=0.0)(x, seed=2)
    assert not torch.allclose(v1, normalize(x), atol=1e-3)


def test_to_float_checks_input():
    with pytest.raises(ValueError, match="images"):
        to_float(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        to_float(torch.zeros(1, 3, 32, 32, dtype=torch.int32))
    assert to_float(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max() == 1.0


@pytest.mark.parametrize("encoder, features", [("small", 256), ("resnet18", 512)])
def test_models_shapes(encoder, features):
    model = build_model(encoder, dim=64)
    x = torch.randn(4, 3, 32, 32)
    assert model.features(x).shape == (4, features)
    assert model(x).shape == (4, 64)


def test_projector_is_vicregs_expander():
    layers = list(Projector(256, 128, hidden_dim=512))
    kinds = [type(m) for m in layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features, layers[-1].out_features) == (256, 512, 128)
    assert list(Projector(8, 16))[3].out_features == 16  # hidden width defaults to d


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="encoder"):
        build_model("vit")
    with pytest.raises(ValueError, match="dim"):
        build_model("small", dim=1)


def test_a_stride_two_stem_halves_every_stage_s_resolution():
    from decorr_lite.models import SmallConvNet

    sizes = {}
    for stride in (1, 2):
        encoder = SmallConvNet(16, stem_stride=stride)
        x, seen = torch.randn(2, 3, 32, 32), []
        for layer in encoder.layers:
            x = layer(x)
            if x.dim() == 4:
                seen.append(x.shape[-1])
        sizes[stride] = seen
        assert x.shape == (2, 128)  # the same features, whatever the stride
    assert sizes == {1: [32, 16, 8, 4, 1], 2: [16, 8, 4, 2, 1]}  # the last: average pooling
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        build_model("small", stem_stride=3)
    with pytest.raises(ValueError, match="stem_stride=2 is a setting of the small encoder"):
        build_model("resnet18", stem_stride=2)


def test_the_configuration_checks_the_stem_stride_and_keys_it():
    from decorr_lite.config import TrainConfig
    from decorr_lite.record import run_key

    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, and 2 only with encoder='small'"):
        TrainConfig(stem_stride=2, encoder="resnet18")
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        TrainConfig(stem_stride=4)
    with pytest.raises(TypeError, match="stem_stride must be int"):
        TrainConfig(stem_stride=2.0)
    assert run_key(TrainConfig(stem_stride=1), portable=True) != run_key(TrainConfig(stem_stride=2), portable=True)
