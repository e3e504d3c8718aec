"""TrainConfig checks every setting before any data is read, and a diverged run says so."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_run_settings

from decorr_lite import runs, train, training
from decorr_lite.config import migrate_settings
from decorr_lite.losses import loss_spec
from decorr_lite.train import TrainConfig, run_key

BAD_FLAGS = [
    # these trained the whole run and then died in the linear probe, in numpy or in torch
    (["--seed", "-1"], "seed must be in [0, 2**32 - 1]"),
    (["--seed", "-7"], "seed must be in [0, 2**32 - 1]"),
    (["--seed", str(2**64)], "seed must be in [0, 2**32 - 1]"),
    (["--seed", str(2**32)], "seed must be in [0, 2**32 - 1]"),
    # this hung building the evaluation schedule
    (["--eval-points", str(10**9)], "eval_points must be at most 1000"),
    # these passed the config check and failed after the data was decoded and the step-0 evaluation ran
    (["--exponent", "0"], "exponent must be"),
    (["--exponent", "nan"], "exponent must be"),
    (["--method", "gram", "--exponent", "1"], "needs exponent=2"),
    (["--knn-k", "0"], "knn_k must be >= 1"),
    (["--probe-batch", "1"], "probe_batch must be >= 2"),
    (["--train-subset", "-5"], "train_subset must be in"),
    (["--train-subset", "60000"], "train_subset must be in"),
    (["--width", "0"], "width must be >= 1"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "device="),
    (["--device", "cudax"], "device must be"),
    (["--train-subset", "100", "--batch-size", "256"], "batch_size must be in"),
    (["--sim-coeff", "inf"], "sim_coeff must be a finite number"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--knn-k", "50", "--eval-bank", "20"], "knn_k=50 needs a kNN bank"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_settings_fail_at_once_with_exit_2(flags, message, train_refused):
    """Each of these failed late (BAD_FLAGS says how): after the data was decoded, or at the end
    of training, or never, as a traceback with exit 1. No data is given here: the check must come
    first."""
    error = train_refused(flags)
    assert message in error, error


def test_the_largest_seed_is_accepted():
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


def test_numpy_scalars_from_a_sweep_are_plain_numbers_and_give_the_same_key():
    """np.int64 was accepted and failed later in run_key ("not JSON serializable", no field named)."""
    plain = TrainConfig(seed=3, steps=10, dim=64, lr=1e-3, std_coeff=0.0)
    swept = TrainConfig(
        seed=np.int64(3), steps=np.int32(10), dim=np.uint16(64), lr=np.float64(1e-3), std_coeff=np.float64(0)
    )
    assert type(swept.seed) is int and type(swept.steps) is int and type(swept.weights["std_coeff"]) is float
    assert run_key(swept) == run_key(plain)
    assert type(TrainConfig(lr=np.float32(0.5)).lr) is float


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("seed", 1.5, TypeError),
        ("seed", "3", TypeError),
        ("seed", True, TypeError),
        ("steps", np.float64(2.5), TypeError),
    ],
)
def test_a_seed_or_count_of_the_wrong_kind_is_refused(field, value, error):
    with pytest.raises(error, match=field):
        TrainConfig(**{field: value})


def test_more_evaluation_points_than_steps_evaluates_every_step():
    assert training.evaluation_steps(3, 1000) == [0, 1, 2, 3]
    assert training.evaluation_steps(0, 6) == [0]
    assert training.evaluation_steps(300, 6) == [0, 50, 100, 150, 200, 250, 300]
    # the same schedule as the set of rounded fractions whenever the latter is defined
    for total in range(0, 40):
        for points in range(1, 50):
            assert training.evaluation_steps(total, points) == sorted(
                {round(i * total / points) for i in range(points + 1)}
            )


def test_a_diverged_run_says_so_and_what_to_change(tiny_cifar):
    """With lr=1e18 the only update made the model's outputs non-finite, and evaluation then
    said "z contains NaN or Inf ... pass check_finite=False", which a train_ssl user cannot act on."""
    with pytest.raises(FloatingPointError, match=r"training diverged.*lower lr \(now 1e\+18\)"):
        train.train_ssl(**tiny_run_settings(tiny_cifar, lr=1e18, steps=1, eval_points=1), cache=False, progress=False)


def test_a_copy_with_another_loss_takes_that_loss_s_weights():
    """``dataclasses.replace(config, loss="barlow")`` carried VICReg's weights over and raised."""
    vicreg = TrainConfig(loss="vicreg", std_coeff=0.0, dim=64)
    barlow = dataclasses.replace(vicreg, loss="barlow")
    assert dict(barlow.weights) == dict(loss_spec("barlow").defaults) and barlow.dim == 64
    assert dataclasses.replace(barlow, loss="vicreg").weights == TrainConfig(dim=64).weights
    kept = dataclasses.replace(vicreg, method="fft")  # the same loss: its weights stay as they were
    assert kept.weights["std_coeff"] == 0.0
    with pytest.raises(ValueError, match="'lambd' is neither a setting of TrainConfig nor a weight of vicreg"):
        dataclasses.replace(barlow, loss="vicreg", weights={"lambd": 0.1})  # given anew: checked


def test_minus_zero_is_the_same_weight_and_the_same_run_as_zero():
    plus, minus = TrainConfig(std_coeff=0.0), TrainConfig(std_coeff=-0.0)
    assert plus == minus and run_key(plus, precision="fp32") == run_key(minus, precision="fp32")
    assert math.copysign(1.0, minus.weights["std_coeff"]) == 1.0
    for field in ("weight_decay", "warmup_fraction"):  # every float setting, not only the weights
        assert run_key(TrainConfig(**{field: -0.0}), precision="fp32") == run_key(
            TrainConfig(**{field: 0.0}), precision="fp32"
        )


def test_a_run_stored_with_every_loss_s_weights_as_settings_still_loads(tmp_path):
    """Runs of format 6 and before stored every weight of both losses as settings of their own."""
    old_layout = {**TrainConfig(loss="barlow", lambd=0.02).as_dict(), "sim_coeff": 25.0, "std_coeff": 25.0,
                  "cov_coeff": 1.0, "on_diag_coeff": 1.0, "lambd": 0.02}  # fmt: skip
    del old_layout["weights"]
    config = TrainConfig(**migrate_settings(old_layout))
    assert config == TrainConfig(loss="barlow", lambd=0.02)
    assert migrate_settings(config.as_dict()) == config.as_dict()  # this version's layout: unchanged
    (tmp_path / "metrics.json").write_text(json.dumps({"config": old_layout, "history": [], "final": {}}))
    np.savez(tmp_path / "arrays.npz", covariance=np.eye(2))
    assert TrainConfig(**runs.load_run(tmp_path).config) == config  # an out= folder of an earlier version
