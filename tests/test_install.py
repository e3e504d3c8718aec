"""A non-editable install works on its own: ``pip install .`` into a fresh virtual environment,
then the notebooks, copied to another folder, run from the installed package and its run bank,
with no CIFAR-10 on disk.

The fresh environment borrows the dependencies (torch, jupyter, ...) of the one running the tests
through a ``.pth`` line, so no package is downloaded; decorr-lite itself is built and installed
from a copy of this checkout without ``-e``, by the test runner's pip (``pip --python``). A ``.pth`` line adds a folder to ``sys.path`` but does not run
that folder's own ``.pth`` files, so the checkout's editable install stays out of sight.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from decorr_lite import bank

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, command))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _fresh_venv(venv: Path) -> Path:
    """A venv without pip whose ``sys.path`` borrows this environment's packages (a ``.pth``
    line); returns its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _pip_install(python: Path, what: Path, *flags: str) -> None:
    """Install ``what`` (a source folder or a wheel) into the venv of ``python`` with this
    environment's pip, without its dependencies (the venv borrows them) and without the index."""
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          *flags, str(what)])  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with decorr-lite installed from this checkout (not editable)."""
    base = tmp_path_factory.mktemp("install")
    # without pip: the venv's own (older) setuptools would build the wheel; the borrowed one is what a user has
    python = _fresh_venv(base / "venv")
    # a copy of the source without build outputs, as an sdist would hold it
    source = base / "source"
    top_level = {".venv", ".git", ".cache", "build", "data", ".pytest_cache"}  # not decorr_lite/data: that is code

    def ignore(folder, names):
        here = {n for n in names if n.endswith(".egg-info") or n == "__pycache__"}
        return here | (top_level & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, source, ignore=ignore)
    _pip_install(python, source, "--no-build-isolation")
    shutil.rmtree(source)  # the installed package must not need its source
    return python


@pytest.mark.slow
def test_pip_install_holds_the_package_and_its_run_bank(installed):
    code = (
        "import decorr_lite, decorr_lite.bank as b; "
        "print(decorr_lite.__file__); print(len(b.read_index()['entries'])); print(b.check() == [])"
    )
    out = _run([str(installed), "-c", code], cwd="/").stdout.split()
    assert "site-packages" in out[0] and not out[0].startswith(str(ROOT)), out
    assert int(out[1]) > 0 and out[2] == "True", out


@pytest.mark.slow
def test_the_notebooks_run_from_a_copy_with_the_installed_package_and_no_data(installed, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, folder / notebook.name)
    env = {k: v for k, v in os.environ.items() if k not in ("DECORR_DATA", "DECORR_TEST_DATA", "PYTHONPATH")}
    env.update(DECORR_CACHE=str(tmp_path / "cache"), DECORR_QUICK="1", HOME=str(tmp_path / "home"), MPLBACKEND="Agg")
    code = """
import json, sys, time, nbformat
from nbclient import NotebookClient
times = {}
for path in sys.argv[1:]:
    nb = nbformat.read(path, 4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    times[path] = time.perf_counter() - started
print(json.dumps(times))
"""
    kernels = tmp_path / "kernels"  # the kernel is this venv's python, not the test runner's
    _run([str(installed), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", "python3"], env=env)
    env["JUPYTER_PATH"] = str(kernels / "share" / "jupyter")
    proc = _run(
        [str(installed), "-c", code, *sorted(p.name for p in folder.iterdir())], cwd=folder, env=env, timeout=1800
    )
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(times) == {p.name for p in NOTEBOOKS}
    print("notebooks run from the installed package: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


@pytest.mark.slow
def test_the_wheel_and_sdist_build_and_the_wheel_installs_and_runs(tmp_path):
    """``python -m build`` makes both; the wheel holds the package data (the run bank, the sample
    images) and, installed into a fresh venv, imports with the one version and computes a loss."""
    import zipfile

    from decorr_lite import __version__

    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda folder, names: (
            {n for n in names if n.endswith(".egg-info") or n == "__pycache__"}
            | (
                {".venv", ".git", ".cache", "build", "data", ".pytest_cache"} & set(names)
                if Path(folder) == ROOT
                else set()
            )
        ),
    )
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(dist), str(source)])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"decorr_lite-{__version__}-py3-none-any.whl"], wheels
    assert [s.name for s in sdists] == [f"decorr_lite-{__version__}.tar.gz"], sdists
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "decorr_lite/bank/index.json" in names and "decorr_lite/data/samples.npz" in names
    entries = json.loads((ROOT / "decorr_lite" / "bank" / "index.json").read_text())["entries"]
    assert sum(n.startswith("decorr_lite/bank/") and n.endswith(".json") for n in names) == len(entries) + 1
    # arrays (and trained encoders) for the seed the notebooks show; the other seeds: metrics only
    assert sum(n.startswith("decorr_lite/bank/") and n.endswith(".npz") for n in names) == len(bank.shown_runs())
    assert (
        sum(zipfile.ZipFile(wheels[0]).getinfo(n).file_size for n in names if n.startswith("decorr_lite/bank/"))
        < 15 * 2**20
    )
    # the sdist holds the course's sources (the website's included) and not the built site
    import tarfile

    members = [m.split("/", 1)[1] for m in tarfile.open(sdists[0]).getnames() if "/" in m]
    for path in ("site/conf.py", "site/index.md", "site/api.md", "docs/glossary.md", "notebooks/02_collapse.ipynb",
                 "tools/student_edition.py", "LICENSE", "LICENSE-CONTENT.md", "CITATION.cff", "CHANGELOG.md"):  # fmt: skip
        assert path in members, path
    assert not any(m.startswith(("build/", "student/")) for m in members)

    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, wheels[0])
    code = (
        "import torch, decorr_lite as dl; from decorr_lite.data import samples; "
        "z = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)); "
        "print(dl.__version__, dl.__file__); "
        "print(float(dl.VICRegLoss(method='fft', exponent=1, seed=0)(z, z + 0.1))); "
        "print(samples.sample_images(1, root='/nonexistent')[2])"
    )
    lines = _run([str(python), "-c", code], cwd="/").stdout.splitlines()
    version, location = lines[0].split()
    assert version == __version__ and "site-packages" in location and not location.startswith(str(ROOT))
    assert float(lines[1]) > 0 and lines[2] == "shipped samples"
