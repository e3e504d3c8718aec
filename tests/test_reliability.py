"""Defects found by an adversarial pass over the library, one test (or a few) per defect.

Each test reproduces a wrong answer given without a word, or a state that stayed broken until
someone deleted files by hand, and checks the fix. Distributed mismatches are tested with real
processes in ``test_distributed.py``; the data and run caches further down.
"""

from __future__ import annotations

import pytest
import torch

import decorr_lite as dl
from decorr_lite import diagnostics

LOSSES = {"vicreg": dl.vicreg_loss, "barlow": dl.barlow_twins_loss}
METHODS = {
    "exact": {},
    "gram": {},
    "fft b=d": {"method": "fft"},
    "fft b=8": {"method": "fft", "block_size": 8},
    "fft b=d q=1": {"method": "fft", "exponent": 1},
}


def _kwargs(name: str) -> dict:
    return {"method": name, **METHODS[name]} if name in ("exact", "gram") else dict(METHODS[name])


# --------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 50.0])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("method", list(METHODS))
def test_losses_inside_autocast_equal_the_float32_loss(dtype, scale, loss, method):
    """Embeddings made inside a CPU autocast region (half precision), and the loss called there
    too: the loss is float32, equals the float32 loss of the same embeddings to 1e-5, and its
    gradients are finite: with respect to the embeddings, in their dtype, and (bf16, whose range
    is float32's) through the layer. In fp16 the layer's own backward can overflow at scale 50
    (a sum over the batch of large gradients): that is what a gradient scaler is for."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    layer = torch.nn.Linear(32, 64)
    with torch.autocast("cpu", dtype=dtype):
        z1, z2 = layer(x) * scale, layer(x + 0.3 * torch.randn(x.shape, generator=g)) * scale
        assert z1.dtype == dtype
        value = LOSSES[loss](z1, z2, **_kwargs(method))
    f1, f2 = (z.detach().float().requires_grad_() for z in (z1, z2))
    reference = LOSSES[loss](f1, f2, **_kwargs(method))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=0)
    z1.retain_grad()
    value.backward()
    reference.backward()
    assert z1.grad.dtype == dtype and torch.isfinite(z1.grad).all()
    torch.testing.assert_close(z1.grad.float(), f1.grad, rtol=1e-2, atol=1e-2 * float(f1.grad.abs().max()))
    if dtype == torch.bfloat16:
        assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


def test_gram_in_float16_is_finite():
    """n = d = 32 with unit-variance data: the squared Gram entries overflowed float16 (inf)."""
    z = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    half = dl.covariance_loss(z.half(), method="gram")
    assert torch.isfinite(half)
    torch.testing.assert_close(half, dl.covariance_loss(z.half().float(), method="exact"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_function_returns_float32_and_gradients_in_the_input_dtype(dtype):
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    z2 = torch.randn(40, 12, generator=g).to(dtype).requires_grad_()
    outputs = [
        dl.invariance_loss(z1, z2),
        dl.variance_loss(z1),
        dl.covariance_loss(z1, method="gram"),
        dl.covariance_loss(z1, method="fft", block_size=5),
        dl.cross_correlation(z1, z2).sum(),
        dl.circular_correlation(z1, z2, 4).sum(),
        *dl.vicreg_terms(z1, z2, method="fft").values(),
        *dl.barlow_twins_terms(z1, z2, method="gram").values(),
        dl.vicreg_loss(z1, z2, sim_coeff=0, std_coeff=0, cov_coeff=0),
    ]
    assert [o.dtype for o in outputs] == [torch.float32] * len(outputs)
    sum(o for o in outputs if o.requires_grad).backward()
    assert z1.grad.dtype == dtype and z2.grad.dtype == dtype and torch.isfinite(z1.grad.float()).all()


def test_float64_stays_float64_under_autocast():
    z1, z2 = (torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in (3, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = [dl.vicreg_loss(z1, z2, method=m) for m in ("exact", "gram", "fft")]
    assert all(v.dtype == torch.float64 for v in values)
    torch.testing.assert_close(values[0], dl.vicreg_loss(z1, z2), rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- large exponents


def test_barlow_fft_with_a_large_integer_exponent():
    """n ** exponent on Python ints overflowed (OverflowError: int too big to convert) at q >= 8."""
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(256, 16, generator=g), torch.randn(256, 16, generator=g)
    as_int = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8)
    as_float = dl.barlow_twins_loss(z1, z2, method="fft", exponent=8.0)
    torch.testing.assert_close(as_int, as_float, rtol=0, atol=0)
    torch.testing.assert_close(as_int, dl.barlow_twins_loss(z1.double(), z2.double(), method="fft", exponent=8).float())


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("exponent", [16, 24])
def test_large_exponents_in_float32_match_exact(loss, exponent):
    """The sums were raised to q before they were normalised: NaN in float32 from q = 16. With
    b = 1 every wrapped diagonal is one entry, so the relaxation must equal the exact loss."""
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(256, 12, generator=g)
    z2 = z1 + 0.5 * torch.randn(256, 12, generator=g)
    relaxed = LOSSES[loss](z1, z2, method="fft", block_size=1, exponent=exponent)
    exact = LOSSES[loss](z1.double(), z2.double(), exponent=exponent)
    assert torch.isfinite(relaxed)
    torch.testing.assert_close(relaxed.double(), exact, rtol=1e-4, atol=1e-30)


# --------------------------------------------------------------------------- smaller items


def test_terms_accepts_a_single_name():
    """A string used to be iterated character by character ("i", "n", ...: unknown terms)."""
    z1, z2 = torch.randn(20, 6), torch.randn(20, 6)
    assert list(dl.vicreg_terms(z1, z2, terms="invariance")) == ["invariance"]
    torch.testing.assert_close(
        dl.vicreg_terms(z1, z2, terms="variance")["variance"], dl.vicreg_terms(z1, z2, terms=["variance"])["variance"]
    )


@pytest.mark.parametrize("make", [lambda: torch.randn(20, 6).to_sparse(), lambda: torch.randn(20, 6, device="meta")])
def test_sparse_and_meta_tensors_get_a_clear_error(make):
    with pytest.raises(TypeError, match="dense tensors on a real device"):
        dl.vicreg_loss(make(), make())


def test_gram_penalty_is_never_negative():
    """The Gram route subtracts the squared variances from a total that holds them: for exactly
    decorrelated input (d = 1: no off-diagonal entry at all) rounding could leave it below 0."""
    values = []
    for seed in range(40):
        z = 100 * torch.randn(512, 1, generator=torch.Generator().manual_seed(seed))
        values += [
            float(dl.covariance_loss(z, method="gram")),
            float(dl.barlow_twins_terms(z, z * 2, method="gram")["off_diagonal"]),
        ]
    assert min(values) >= 0


@pytest.mark.parametrize(
    "call",
    [
        lambda z1, z2: dl.barlow_twins_loss(z1, z2),
        lambda z1, z2: dl.barlow_twins_loss(z1, z2, method="gram"),
        lambda z1, z2: dl.barlow_twins_loss(z1, z2, method="fft"),
        lambda z1, z2: dl.vicreg_loss(z1, z2, method="fft"),
        lambda z1, z2: dl.vicreg_loss(z1, z2, method="fft", block_size=3),
    ],
)
def test_higher_order_derivatives_are_refused_with_a_clear_error(call):
    z1 = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(16, 6, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.autograd.grad(call(z1, z2), z1, create_graph=True)
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.func.grad(lambda z: call(z, z2))(z1.detach())


def test_vicreg_exact_supports_higher_order_derivatives():
    z1 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: dl.vicreg_loss(a, b, check_finite=False), (z1, z2))
    torch.testing.assert_close(
        torch.func.grad(lambda z: dl.vicreg_loss(z, z2.detach(), check_finite=False))(z1.detach()),
        torch.autograd.grad(dl.vicreg_loss(z1, z2), z1)[0],
    )


# --------------------------------------------------------------------------- diagnostics


def test_knn_at_a_small_temperature_does_not_overflow():
    """exp(s / T) overflowed at T = 1e-3: every neighbour weighed inf, the votes tied at nan and
    the lowest class won. Here the one nearest neighbour (similarity 1) is of the right class,
    the others are a bit farther and of class 0: a small T must follow the nearest."""
    train = torch.tensor([[1.0, 0.0], [0.9, 0.44], [0.9, -0.44], [0.88, 0.47]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 0])
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert diagnostics.knn_accuracy(train, labels, query, torch.tensor([1]), k=4, temperature=1e-3) == 1.0
    assert diagnostics.knn_accuracy(train, labels, query, torch.tensor([1]), k=4, temperature=None) == 0.0


@pytest.mark.parametrize("temperature", [0, -0.1, float("nan"), float("inf")])
def test_knn_rejects_a_bad_temperature(temperature):
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="temperature must be"):
        diagnostics.knn_accuracy(x, torch.arange(10) % 2, x, torch.arange(10) % 2, k=3, temperature=temperature)


def test_knn_rejects_nan_features():
    x = torch.randn(10, 3)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="test_features contains NaN"):
        diagnostics.knn_accuracy(x, torch.arange(10) % 2, bad, torch.arange(10) % 2, k=3)


@pytest.mark.parametrize("name", ["margin", "complete_below", "dimensional_above"])
def test_collapse_report_rejects_nan_thresholds(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        diagnostics.collapse_report(torch.randn(20, 4), **{name: float("nan")})


# --------------------------------------------------------------------------- partial datasets

import io  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from conftest import image_members, tiny_run_settings, write_tree  # noqa: E402
from decorr_lite import _atomic, cli, runs, train, training  # noqa: E402
from decorr_lite.data import CorruptDataError, cifar10, load_cifar10  # noqa: E402


def _cached_files(cache: Path) -> list[str]:
    folder = cache / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_tar_cut_between_members_is_refused_and_not_cached(splits, tmp_path, isolated_cache):
    """An uncompressed tar cut cleanly after a member reads without an error: it loaded as a
    smaller test split (9,199 images of the real copy) and was cached."""
    full = tmp_path / "cifar10-full.tar"
    with tarfile.open(full, "w") as tar:
        for name, data in image_members(splits):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(full) as tar:
        members = [m for m in tar.getmembers() if "/test/" in m.name]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "cifar10-cut.tar").write_bytes(full.read_bytes()[: members[-2].offset])  # the last 2 test images gone
    with pytest.raises(CorruptDataError, match=r"test split has 28 images where CIFAR-10 has 30") as err:
        load_cifar10("test", root=cut, download=False, progress=False)
    assert "truck: 1 of 3 (2 missing)" in str(err.value) and "complete copy" in str(err.value)
    assert _cached_files(isolated_cache) == []


def test_an_image_tree_with_missing_files_names_the_class(splits, tmp_path, isolated_cache):
    tree = write_tree(tmp_path / "tree", image_members(splits, prefix=""))
    for path in sorted((tree / "train" / "cat").iterdir())[:2]:
        path.unlink()
    with pytest.raises(CorruptDataError, match=r"cat: 4 of 6 \(2 missing\)") as err:
        load_cifar10("train", root=tree, download=False, progress=False)
    assert "restore the missing files" in str(err.value)
    assert _cached_files(isolated_cache) == []
    # an extra image is as wrong as a missing one
    (tree / "test" / "dog" / "extra.png").write_bytes((tree / "test" / "dog").iterdir().__next__().read_bytes())
    with pytest.raises(CorruptDataError, match="dog: 4, 1 more than 3"):
        load_cifar10("test", root=tree, download=False, progress=False)


# --------------------------------------------------------------------------- damaged caches


@pytest.mark.parametrize("damage", ["truncate", "flip a bit", "empty", "garbage"])
def test_a_damaged_dataset_cache_is_rebuilt(image_archive, isolated_cache, damage):
    """A truncated or bit-flipped .npz failed every later load (BadZipFile, Bad CRC-32)."""
    first = load_cifar10("test", root=image_archive, download=False, progress=False)
    (cached,) = (isolated_cache / "datasets").iterdir()
    raw = bytearray(cached.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip a bit":
        raw[len(raw) // 2] ^= 0x10  # inside the images
    elif damage == "empty":
        raw = b""
    else:
        raw = os.urandom(len(raw))
    cached.write_bytes(bytes(raw))
    with pytest.warns(cifar10.CacheWarning, match="damaged"):
        again = load_cifar10("test", root=image_archive, download=False, progress=False)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is clean
        load_cifar10("test", root=image_archive, download=False, progress=False)


@pytest.fixture
def tiny_run(tiny_cifar):
    return tiny_run_settings(tiny_cifar, dim=8, steps=2, eval_points=1)


@pytest.mark.parametrize(
    "damage",
    ["truncate metrics.json", "truncate arrays.npz", "remove model.pt", "truncate model.pt", "remove metrics.json"],
)
def test_a_damaged_run_cache_entry_is_retrained_and_replaced(tiny_run, damage):
    """A truncated metrics.json crashed every later run of that configuration (JSONDecodeError),
    and a run without model.pt was served as cached."""
    first = train.train_ssl(**tiny_run, progress=False)
    verb, name = damage.split()
    path = first.path / name
    path.unlink() if verb == "remove" else path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(cifar10.CacheWarning, match="damaged"):
        again = train.train_ssl(**tiny_run, progress=False)
    assert not again.from_cache and again.final["knn_top1"] == first.final["knn_top1"]
    assert train.cached_run(**tiny_run) is not None  # replaced: a clean hit from now on
    again.load_model()


def test_no_cache_on_the_command_line_replaces_a_damaged_entry(tiny_run, tmp_path, capsys):
    first = train.train_ssl(**tiny_run, progress=False)
    (first.path / "metrics.json").write_text("{")
    argv = (
        ["train", "--quiet", "--no-cache"]
        + [x for k, v in tiny_run.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]
        + ["--train-subset", "0"]
    )
    assert cli.main(argv) == 0
    replaced = train.load_run(first.path.parent).final  # the run's folder names its new version
    assert {k: replaced[k] for k in ("knn_top1", "linear_probe_top1", "effective_rank")} == {
        k: first.final[k] for k in ("knn_top1", "linear_probe_top1", "effective_rank")
    }


# --------------------------------------------------------------------------- unusable cache folders


def test_a_cache_folder_that_is_a_file_only_turns_caching_off(image_archive, tmp_path, monkeypatch):
    """DECORR_CACHE naming a file aborted load_cifar10 after decoding (NotADirectoryError)."""
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("DECORR_CACHE", str(not_a_folder))
    with pytest.warns(cifar10.CacheWarning, match="caching is off.*DECORR_CACHE"):
        images, labels = load_cifar10("test", root=image_archive, download=False, progress=False)
    assert images.shape == (30, 3, 32, 32)


def test_a_read_only_cache_only_turns_caching_off(image_archive, tiny_run, monkeypatch):
    """A read-only file system (simulated: root ignores permission bits) aborted load_cifar10
    after decoding and train_ssl after training."""

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(_atomic, "temporary", read_only)
    with pytest.warns(cifar10.CacheWarning, match="caching is off"):
        load_cifar10("test", root=image_archive, download=False, progress=False)
    with pytest.warns(cifar10.CacheWarning, match="the run was not cached"):
        run = train.train_ssl(**tiny_run, progress=False)
    assert run.path is None and np.isfinite(run.final["knn_top1"])


# --------------------------------------------------------------------------- litter


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_by_the_next_write(image_archive, tiny_run, isolated_cache):
    """A SIGKILL during a cache write left .part files and hidden run folders forever."""
    host = _atomic._host()
    datasets, runs_dir = isolated_cache / "datasets", isolated_cache / "runs"
    datasets.mkdir()
    runs_dir.mkdir()
    dead = datasets / f".cifar10-train-x.npz.tmp-{host}-{_dead_pid()}-abc"
    alive = datasets / f".cifar10-train-y.npz.tmp-{host}-{os.getpid()}-abc"  # a writer still at work
    elsewhere = datasets / ".cifar10-train-z.npz.tmp-otherhost-1-abc"  # another machine, recent
    old = datasets / ".cifar10-train-w.npz.tmp-otherhost-2-abc"  # another machine, two days old
    for path in (dead, alive, elsewhere, old):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    dead_run = runs_dir / f".0123456789abcdef.tmp-{host}-{_dead_pid()}-xyz"
    dead_run.mkdir()
    (dead_run / "metrics.json").write_text("{")
    load_cifar10("test", root=image_archive, download=False, progress=False)
    assert sorted(p.name for p in datasets.iterdir() if p.name.startswith(".")) == sorted([alive.name, elsewhere.name])
    train.train_ssl(**tiny_run, progress=False)
    assert not dead_run.exists()
    run = next(p for p in runs_dir.iterdir() if not p.name.startswith("."))
    version = runs._current_version(run)
    assert {oct(p.stat().st_mode & 0o777) for p in (run, version)} == {oct(0o755)}  # shared like the datasets
    assert {oct(p.stat().st_mode & 0o777) for p in (run / "current", *version.iterdir())} == {oct(0o644)}


# --------------------------------------------------------------------------- the command line


BAD_FLAGS = [
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
def test_bad_settings_fail_at_once_with_exit_2(flags, message, capsys, tmp_path, monkeypatch):
    """These passed the config check and failed after the data was decoded and the step-0
    evaluation ran, as a traceback with exit 1. No data is given here: the check must come first."""
    monkeypatch.setenv("DECORR_DATA", str(tmp_path / "no-data-here"))
    started = time.perf_counter()
    assert cli.main(["train", "--quiet", *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error, error
    assert time.perf_counter() - started < 2
    assert not (tmp_path / "no-data-here").exists()


@pytest.mark.parametrize("kind", ["a file", "inside a file"])
def test_an_unusable_out_folder_fails_before_training(kind, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DECORR_DATA", str(tmp_path / "no-data-here"))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "a file" else blocker / "run"
    assert cli.main(["train", "--quiet", "--out", str(out)]) == 2
    assert "error: out=" in capsys.readouterr().err


def test_a_batch_too_small_for_the_processes_is_refused(tiny_run, monkeypatch):
    """--batch-size 6 on 4 processes would leave processes with 1 image (BatchNorm fails, or the
    local batch check raised on one rank while the others waited)."""
    monkeypatch.setattr(training, "_distributed_setup", lambda device: (4, 0, False))
    with pytest.raises(ValueError, match="batch_size=6 over 4 processes.*batch_size >= 8"):
        train.train_ssl(**{**tiny_run, "batch_size": 6}, progress=False)


def test_subset_accepts_numpy_integers(image_archive):
    images, _ = load_cifar10("train", root=image_archive, download=False, progress=False, subset=np.int64(20))
    assert images.shape[0] == 20
