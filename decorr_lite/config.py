"""The configuration of a training run: every setting, checked before any data is read.

``TrainConfig`` holds what a run computes (the loss, its weights and method, the model, the
schedule, the data and evaluation sets, the seed, the device and precision); the run cache's key
is a hash of it (``runs.run_key``). Each error names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .data import cifar10
from .losses import LOSSES, loss_spec
from .losses._checks import check_exponent, check_method
from .models import ENCODERS
from .settings import PRECISIONS, quick_mode

MAX_SEED = 2**32 - 1  # scikit-learn's random_state and numpy's legacy seeds take at most this

MAX_EVAL_POINTS = 1000


class Weights(Mapping):
    """A loss's weights by coefficient name (``{"sim_coeff": 25.0, ...}``), in its spec's order:
    a read-only mapping that can be hashed, as a frozen configuration's field must be. ``loss``:
    the loss they weigh, so that a configuration copied with another loss knows they are not its."""

    def __init__(self, values: Mapping[str, float], loss: str | None = None) -> None:
        self._values = dict(values)
        self.loss = loss

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return repr(self._values)


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Every setting of a run; the run cache's key is a hash of them (``record.run_key``).

    The loss's weights are one mapping, ``weights``, checked against the loss's spec
    (``decorr_lite.losses.LOSSES``): a weight the spec does not know is an error, one it is not
    given takes the spec's default, and a weight of 0 switches its term off. They may also be
    passed as keywords: ``TrainConfig(loss="vicreg", std_coeff=0.0)`` is
    ``TrainConfig(loss="vicreg", weights={"std_coeff": 0.0})``. A copy with another loss
    (``dataclasses.replace(config, loss="barlow")``) takes the new loss's default weights.
    """

    loss: str = "vicreg"  # a name of decorr_lite.losses.LOSSES
    weights: Weights | None = None  # the loss's weights by coefficient name (None: its defaults)
    # how the decorrelation term is computed
    method: str = "exact"
    block_size: int | None = None
    exponent: float = 2.0
    permutation: bool = True  # a fresh random feature permutation every step ("fft" only)
    # model
    encoder: str = "small"
    width: int = 32
    stem_stride: int = 1  # 2: the small encoder's first convolution halves the resolution
    dim: int = 1024
    hidden_dim: int | None = None
    # schedule and optimiser (AdamW, linear warm-up, cosine decay)
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    # data and evaluation: the final evaluation's kNN bank (training images) and queries (test
    # images); the evaluation points use balanced subsets of them (all of them if as large)
    train_subset: int | None = 10000
    eval_points: int = 6
    eval_bank: int = 2000
    eval_queries: int = 1000
    final_bank: int = 10000
    final_queries: int | None = None
    bn_images: int = 2000  # images of the final bank on which BatchNorm is re-estimated (precise BN)
    knn_k: int = 20
    probe_batch: int = 256
    matrix_dims: int = 64
    data_root: str | None = None
    seed: int = 0
    device: str = "auto"
    # "auto": bf16 autocast where the device computes bf16 natively, else fp32 (settings.py)
    precision: str = "auto"

    def __init__(self, loss: str = "vicreg", weights: Mapping[str, float] | None = None, **settings) -> None:
        spec = loss_spec(loss)  # a clear error for an unknown loss
        if isinstance(weights, Weights) and weights.loss not in (None, loss):  # a copy with another loss
            weights = {}  # that loss's weights (its defaults too) are not this one's: take this one's defaults
        weights = dict(weights or {})
        for name in [name for name in settings if name not in _FIELDS]:
            weights[name] = settings.pop(name)  # a weight given as a keyword
        unknown = [name for name in weights if name not in spec.defaults]
        if unknown:
            owners = {name: [o.name for o in LOSSES.values() if name in o.defaults] for name in unknown}
            hints = "".join(f"; {name} weighs a term of {' and '.join(o)}" for name, o in owners.items() if o)
            raise ValueError(
                f"{', '.join(map(repr, unknown))} is neither a setting of TrainConfig nor a weight of {loss}, "
                f"whose weights are {', '.join(spec.defaults)}{hints}"
            )
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} (a weight of {loss}) must be a number, got {value!r}")
        object.__setattr__(self, "loss", loss)
        weights = {k: float(v) + 0.0 for k, v in weights.items()}  # + 0.0: -0.0 is 0.0, one key for one run
        object.__setattr__(self, "weights", Weights({**spec.defaults, **weights}, loss=loss))
        for f in dataclasses.fields(self):
            if f.name not in ("loss", "weights"):
                object.__setattr__(self, f.name, settings.get(f.name, f.default))
        self.__post_init__()

    def __post_init__(self) -> None:
        # sim_coeff=0 and sim_coeff=0.0 are the same run: store every float field as a float and
        # every int field as an int (numpy scalars from a sweep included), so that both give the
        # same cache key and the key can be written as JSON
        for f in dataclasses.fields(self):
            value, kinds = getattr(self, f.name), field_kinds(f)
            if isinstance(value, bool) or value is None:
                continue
            if "float" in kinds and isinstance(value, numbers.Real):
                object.__setattr__(self, f.name, float(value) + 0.0)  # + 0.0: -0.0 is 0.0
            elif "int" in kinds and isinstance(value, numbers.Integral):
                object.__setattr__(self, f.name, int(value))
            elif "str" in kinds and isinstance(value, os.PathLike):
                object.__setattr__(self, f.name, os.fspath(value))
        _validate(self)

    def total_steps(self, train_size: int) -> int:
        per_epoch = max(train_size // self.batch_size, 1)
        if self.steps is not None:
            return self.steps
        return int(round((1.0 if self.epochs is None else self.epochs) * per_epoch))

    def as_dict(self) -> dict:
        """Every field, the weights as a plain dict: ``TrainConfig(**config.as_dict())`` is ``config``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"weights": dict(self.weights)}


def migrate_settings(settings: Mapping) -> dict:
    """A stored run's settings (``metrics.json``'s ``config``) in this version's layout, for
    ``TrainConfig(**settings)``: runs of format 6 and before stored every weight of every loss
    as a setting of its own, whichever loss they trained (``sim_coeff``, ..., ``lambd``)."""
    settings = dict(settings)
    if "weights" in settings:
        return settings
    spec = LOSSES.get(settings.get("loss", "vicreg"))
    names = {name for other in LOSSES.values() for name in other.defaults}
    flat = {name: settings.pop(name) for name in names if name in settings}
    settings["weights"] = {name: value for name, value in flat.items() if spec is not None and name in spec.defaults}
    return settings


def _validate(c: TrainConfig) -> None:
    """Every setting, checked before any data is read, each error naming the field and the fix."""
    _check_types(c)
    spec = loss_spec(c.loss)
    if c.method not in spec.methods:
        raise ValueError(f"method must be one of {spec.methods} for loss={c.loss!r}, got {c.method!r}")
    if c.encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {c.encoder!r}")
    if c.stem_stride not in (1, 2) or c.stem_stride != 1 and c.encoder != "small":
        raise ValueError(
            f"stem_stride must be 1 or 2, and 2 only with encoder='small' (its first convolution's "
            f"stride), got stem_stride={c.stem_stride!r} with encoder={c.encoder!r}"
        )
    for name, value in [
        *c.weights.items(),
        *((name, getattr(c, name)) for name in ("weight_decay", "warmup_fraction")),
    ]:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not c.warmup_fraction <= 1:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {c.warmup_fraction!r}")
    if not (math.isfinite(c.lr) and c.lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {c.lr!r}")
    check_method(c.method, check_exponent(c.exponent))  # q >= 1; gram needs q = 2
    if c.steps is not None and c.epochs is not None:
        raise ValueError("give steps or epochs, not both")
    if c.steps is not None and c.steps < 0 or c.epochs is not None and not (math.isfinite(c.epochs) and c.epochs >= 0):
        raise ValueError("steps and epochs must be >= 0")
    train_size, test_size = cifar10.SPLIT_SIZES["train"], cifar10.SPLIT_SIZES["test"]
    if c.train_subset is not None and not 1 <= c.train_subset <= train_size:
        raise ValueError(f"train_subset must be in [1, {train_size}] (None: all training images), got {c.train_subset}")
    images = train_size if c.train_subset is None else c.train_subset
    if not 2 <= c.batch_size <= images:
        raise ValueError(
            f"batch_size must be in [2, {images}] (batch statistics need two samples; at most the "
            f"{images} training images), got {c.batch_size}"
        )
    for name, low in (
        ("width", 1),
        ("dim", 2),
        ("eval_points", 1),
        ("matrix_dims", 1),
        ("knn_k", 1),
        ("probe_batch", 2),
        ("bn_images", 2),
    ):
        if getattr(c, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(c, name)}")
    if not 0 <= c.seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**32 - 1] (numpy's and scikit-learn's range), got {c.seed}")
    if c.eval_points > MAX_EVAL_POINTS:
        raise ValueError(
            f"eval_points must be at most {MAX_EVAL_POINTS} (each point embeds the evaluation sets), got {c.eval_points}"
        )
    if c.hidden_dim is not None and c.hidden_dim < 1:
        raise ValueError(f"hidden_dim must be >= 1 or None (the same as dim), got {c.hidden_dim}")
    if c.block_size is not None and not 1 <= c.block_size <= c.dim:
        raise ValueError(f"block_size must be in [1, dim={c.dim}] or None, got {c.block_size}")
    if c.probe_batch > test_size:
        raise ValueError(f"probe_batch must be at most the {test_size} test images, got {c.probe_batch}")
    for name in ("eval_queries", "final_queries"):
        value = getattr(c, name)
        if value is not None and not 1 <= value:
            raise ValueError(
                f"{name} must be >= 1"
                + (" or None (every test image)" if name == "final_queries" else "")
                + f", got {value}"
            )
    for name in ("eval_bank", "final_bank"):  # the final bank from the training images, the other from it
        bank = min(getattr(c, name), c.final_bank, images)
        if c.knn_k > bank:
            raise ValueError(f"knn_k={c.knn_k} needs a kNN bank of at least {c.knn_k} images; {name} gives {bank}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", c.device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {c.device!r}")
    if c.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {c.precision!r}")


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def field_kinds(f: dataclasses.Field) -> list[str]:
    """The types a field's annotation names: ``"int | None"`` -> ``["int", "None"]``."""
    return str(f.type).replace(" ", "").split("|")


def _check_types(c: TrainConfig) -> None:
    """Each field has the type its annotation says (a float for an int field is a typo, not a run)."""
    for f in dataclasses.fields(c):
        if f.name == "weights":  # checked against the loss's spec when the configuration is made
            continue
        value, kinds = getattr(c, f.name), field_kinds(f)
        if value is None and "None" in kinds:
            continue
        ok = {
            "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
            "float": isinstance(value, numbers.Real) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
        }
        if not any(ok.get(kind, False) for kind in kinds):
            raise TypeError(f"{f.name} must be {' or '.join(kinds)}, got {value!r}")


def classroom_settings(quick: bool = False) -> dict:
    """The ``TrainConfig`` fields that the CIFAR-10 notebooks (02, 03, 06) share, so that a run
    trained by one notebook is a cache hit for the next, and the run bank (``decorr_lite.bank``)
    holds every run they show, trained with these settings in full mode.

    Full mode: the width-16 ``SmallConvNet`` (128 features; faster than width 32, so it affords
    more steps) with its first convolution at stride 2 (half the cost of a step, at the price of
    a few points of accuracy: docs/training.md), d = 1024, 300 steps of 256 image pairs drawn
    from all 50,000 training images, 6 evaluation points. ``quick=True`` (``quick=None``: when ``DECORR_QUICK=1``): d = 256,
    60 steps on a balanced 5,000-image subset and small evaluation sets, for tests that must
    train. Both train in the default precision (``auto``: bf16 where the CPU or GPU has it
    natively). How long a run takes, and what it reaches: docs/training.md.
    """
    if quick is None:
        quick = quick_mode()
    if quick:
        return dict(
            encoder="small",
            width=16,
            stem_stride=2,
            dim=256,
            steps=60,
            train_subset=5000,
            eval_points=3,
            eval_bank=2000,
            eval_queries=1000,
            final_bank=2000,
            final_queries=1000,
        )
    # every evaluation point on the final evaluation's sets: the curves start at the untrained
    # encoder's numbers and end at the run's final ones, as its table reports them
    return dict(
        encoder="small",
        width=16,
        stem_stride=2,
        dim=1024,
        steps=300,
        train_subset=None,
        eval_points=6,
        eval_bank=10000,
        eval_queries=5000,
        final_bank=10000,
        final_queries=5000,
    )
