"""Figures for the notebooks. Each function draws on a matplotlib Axes it is given (or makes a
figure) and returns it, so notebooks stay thin and tests can check what was drawn.

Colour conventions: view 1 blue, view 2 orange; matrices in a diverging map centred at 0
(``RdBu_r``: red positive, blue negative, white zero), with symmetric limits.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import diagnostics

MATRIX_CMAP = "RdBu_r"


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def new_axes(ncols: int = 1, nrows: int = 1, size: float = 3.4, **kwargs):
    """A figure and its axes (flat). In the main thread through pyplot, so that a notebook shows
    it at the end of the cell; in any other thread (a widget's background run) as a bare
    ``Figure``, because pyplot's registry of figures is not thread-safe."""
    import threading

    figsize = (size * ncols * 1.15, size * nrows)
    if threading.current_thread() is threading.main_thread():
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kwargs)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes.ravel()


def png_base64(fig, dpi: int = 100) -> str:
    """The figure as a base64-encoded PNG (what a notebook's image output holds)."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)  # laid out already (tight_layout): one draw, not two
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def close(fig) -> None:
    """Close a pyplot figure (a bare ``Figure`` needs nothing), so that it is not shown again."""
    import threading

    if threading.current_thread() is threading.main_thread():
        import matplotlib.pyplot as plt

        plt.close(fig)


def embedding_cloud(ax, z1, z2=None, *, title: str = "embeddings (2 leading PCs of view 1)", max_points: int = 400):
    """Scatter the two views on view 1's first two principal axes, with a line per pair."""
    a = _np(z1)[:max_points]
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.eye(a.shape[1], 2)
    pa = (a - mean) @ axes
    if z2 is not None:
        pb = (_np(z2)[:max_points] - mean) @ axes
        ax.plot(np.stack([pa[:, 0], pb[:, 0]]), np.stack([pa[:, 1], pb[:, 1]]), color="0.8", lw=0.5, zorder=0)
        ax.scatter(pb[:, 0], pb[:, 1], s=6, color="tab:orange", label="view 2")
    ax.scatter(pa[:, 0], pa[:, 1], s=6, color="tab:blue", label="view 1")
    # the same scale on both axes and at least +-2, so a shrinking cloud looks small
    lim = max(2.0, float(np.abs(pa).max()) * 1.1 if pa.size else 2.0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def std_bars(ax, z=None, *, std=None, margin: float = 1.0, title: str = "std per dimension"):
    """Per-dimension std (sorted) as bars, with the variance margin drawn."""
    values = np.sort(_np(std if std is not None else diagnostics.std_per_dim(z)))[::-1]
    ax.bar(np.arange(len(values)), values, color="tab:blue", width=1.0 if len(values) > 64 else 0.8)
    ax.axhline(margin, color="tab:red", ls="--", lw=1, label=f"margin $\\gamma$ = {margin:g}")
    ax.set_xlabel("dimension (sorted)")
    ax.set_ylabel("std")
    ax.set_ylim(0, max(1.5 * margin, float(values.max()) * 1.1 if values.size else 1.0))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return ax


def spectrum(ax, z=None, *, values=None, label: str | None = None, title: str = "singular values (normalised)"):
    """Singular values of the centred embeddings, divided by the largest, on a log scale."""
    s = _np(values if values is not None else diagnostics.singular_spectrum(z))
    s = s / s.max() if s.size and s.max() > 0 else s
    ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), marker="o" if len(s) <= 32 else None, ms=3, label=label)
    ax.set_xlabel("index")
    ax.set_ylabel("$\\sigma_k / \\sigma_1$")
    ax.set_ylim(1e-6, 2)
    ax.set_title(title, fontsize=9)
    if label:
        ax.legend(fontsize=7)
    return ax


def matrix(ax, m, *, title: str = "", vmax: float | None = None, colorbar: bool = True):
    """A square matrix as a heatmap, diverging colours centred at 0, symmetric limits."""
    a = _np(m)
    vmax = vmax or float(np.abs(a).max()) or 1.0
    image = ax.imshow(a, cmap=MATRIX_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


def wrapped_diagonals(ax, d: int, block_size: int, *, title: str | None = None):
    """Colour each entry (i, j) of a d x d matrix by the penalty it is summed into.

    Entries with the same colour are summed before squaring: within each b x b block, the
    wrapped diagonal k = (j - i) mod b. The main diagonal (left to the on-diagonal term) is
    white. With b = 1 every entry is its own sum; with b = d each wrapped diagonal is one sum.
    """
    b = block_size
    i, j = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    block_u, block_v = i // b, j // b
    shift = (j % b - i % b) % b
    group = (block_u * math.ceil(d / b) + block_v) * b + shift
    rng = np.random.default_rng(0)
    palette = rng.permutation(group.max() + 1)
    colours = palette[group].astype(float)
    colours[i == j] = np.nan
    ax.imshow(np.ma.masked_invalid(colours), cmap="tab20", interpolation="nearest")
    for edge in range(b, d, b):
        ax.axhline(edge - 0.5, color="k", lw=1)
        ax.axvline(edge - 0.5, color="k", lw=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"d = {d}, b = {b}: {count_penalties(d, b)} penalised sums", fontsize=9)
    return ax


def count_penalties(d: int, block_size: int) -> int:
    """How many sums the relaxed off-diagonal penalty squares (Barlow Twins' form)."""
    g = math.ceil(d / block_size)
    return g * (block_size - 1) + g * (g - 1) * block_size


def scaling(ax, x, y, *, label: str, slope: float | None = None, marker: str = "o"):
    """One series on log-log axes; the fitted slope goes into the legend."""
    text = label if slope is None else f"{label} (slope {slope:.2f})"
    ax.loglog(_np(x), _np(y), marker=marker, ms=4, label=text)
    ax.legend(fontsize=7)
    return ax


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG (the folder is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


# --------------------------------------------------------------------------- CIFAR-10 runs
# These draw a ``decorr_lite.train.TrainResult`` (or anything with ``history``, ``arrays`` and
# ``config``): its history holds scalars at the evaluation steps, its arrays the spectra, the
# per-dimension std and the probe-batch matrices at the same steps.


def history(ax, result, key: str, *, label: str | None = None, upto: int | None = None, **kwargs):
    """One recorded quantity (``result.history[i][key]``) against the training step."""
    entries = result.history if upto is None else result.history[: upto + 1]
    steps = [e["step"] for e in entries]
    ax.plot(steps, [e[key] for e in entries], marker="o", ms=3, label=label, **kwargs)
    ax.set_xlabel("training step")
    if label:
        ax.legend(fontsize=7)
    return ax


def std_histogram(ax, std, *, margin: float = 1.0, label: str | None = None, bins=None):
    """Histogram of the per-dimension std on a log axis, with the variance margin drawn."""
    values = np.maximum(_np(std), 1e-6)
    bins = np.logspace(-4, 1, 41) if bins is None else bins
    ax.hist(values, bins=bins, alpha=0.6, label=label, histtype="stepfilled")  # one patch, not one per bin
    ax.axvline(margin, color="tab:red", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("std of one embedding dimension")
    ax.set_ylabel("dimensions")
    ax.set_title(f"per-dimension std (margin $\\gamma$ = {margin:g}, dashed)", fontsize=9)
    if label:
        ax.legend(fontsize=7)
    return ax


def run_figure(results: dict, *, untrained=None, title: str | None = None):
    """Four panels comparing runs: effective rank and kNN accuracy over training, the final
    singular-value spectrum (log scale, as Jing et al.) and the final per-dimension std.

    ``results`` maps a label to a run; ``untrained``, if given, is drawn as a grey reference.
    """
    fig, axes = new_axes(4, size=3.1)
    for label, run in results.items():
        history(axes[0], run, "effective_rank", label=label)
        spectrum(axes[1], values=run.arrays["spectrum"][-1], label=label)
        std_histogram(axes[2], run.arrays["std_per_dim"][-1], label=label)
        history(axes[3], run, "knn_top1", label=label)
    if untrained is not None:
        axes[3].axhline(untrained.final["knn_top1"], color="0.5", ls=":", lw=1, label="untrained encoder")
        axes[3].legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_title("effective rank (RankMe) of the embeddings", fontsize=9)
    axes[1].set_title("singular values at the end (normalised)", fontsize=9)
    axes[3].set_title("kNN accuracy of the backbone", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def matrices_figure(result, at: int = -1, *, title: str | None = None):
    """The probe batch's covariance (of view 1) and cross-correlation (view 1 vs view 2) at
    evaluation point ``at``, the identity they are pushed towards, and, over training up to that
    point, the off-diagonal RMS of the full d x d matrices relative to their mean diagonal entry
    and the diagonal error of C."""
    at = range(len(result.history))[at]
    cov, corr = result.arrays["covariance"][at], result.arrays["cross_correlation"][at]
    fig, axes = new_axes(4, size=3.1)
    # one colour scale for the two correlation-like matrices, so that "more red" means the same
    vmax = max(1.0, float(np.abs(corr).max()))
    matrix(axes[0], cov, title="covariance of $z_1$ (VICReg: off-diagonal to 0)")
    matrix(axes[1], corr, title="cross-correlation C (Barlow Twins' target: I)", vmax=vmax)
    matrix(axes[2], np.eye(corr.shape[0]), title="the target, I", vmax=vmax)
    history(axes[3], result, "cov_offdiag_relative", label="covariance: off-diagonal RMS / mean variance", upto=at)
    history(axes[3], result, "corr_offdiag_relative", label="C: off-diagonal RMS / mean $C_{ii}$", upto=at)
    history(axes[3], result, "corr_diag_rms_error", label="C: RMS of $1 - C_{ii}$", upto=at)
    steps = [e["step"] for e in result.history]
    axes[3].set_xlim(min(steps) - 0.03 * max(steps[-1], 1), steps[-1] * 1.03 + 1)
    axes[3].set_title(f"full {result.config['dim']} x {result.config['dim']} matrices", fontsize=9)
    m = cov.shape[0]
    step = result.history[at]["step"]
    fig.suptitle(title or f"step {step}: leading {m} of {result.config['dim']} dimensions of the probe batch",
                 fontsize=10)
    fig.tight_layout()
    return fig


def terms_figure(results: dict, terms: tuple[str, ...], *, title: str | None = None):
    """One panel per loss term: its unweighted value over training for each run (``results``
    maps a label to a run). A term that was off in a run is still measured, without a gradient,
    and drawn dashed."""
    from .train import WEIGHTS

    fig, axes = new_axes(len(terms), size=3.1)
    for ax, term in zip(axes, terms):
        for label, run in results.items():
            weight = run.config.get(WEIGHTS[run.config["loss"]].get(term, ""), 1.0)
            history(ax, run, term, label=label + ("" if weight else " (off)"), ls="-" if weight else "--")
        ax.set_yscale("log")
        ax.set_title(f"{term.replace('_', '-')} term (unweighted)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def collapse_map(ax, results: dict, *, margin: float = 1.0, complete_below: float = 0.05,
                 dimensional_below: float = 0.05):
    """Each run as one point: final median std (x) against final effective rank (y), both on log
    scales, with the thresholds of ``diagnostics.collapse_report`` drawn, so that complete
    collapse (left of the vertical line), dimensional collapse (below the horizontal one) and
    healthy (the upper right) are three regions."""
    for label, run in results.items():
        f = run.final
        ax.scatter(f["median_std"], f["effective_rank"], s=30, zorder=3)
        ax.annotate(label, (f["median_std"], f["effective_rank"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    any_run = next(iter(results.values()))
    max_rank = min(any_run.final["query_size"], any_run.config["dim"])
    ax.axvline(complete_below * margin, color="tab:red", ls="--", lw=1)
    ax.axhline(dimensional_below * max_rank, color="tab:purple", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="median std per dimension (final)", ylabel="effective rank (final)")
    ax.text(0.02, 0.98, "complete\ncollapse", transform=ax.transAxes, va="top", fontsize=8, color="tab:red")
    ax.text(0.98, 0.02, "dimensional collapse", transform=ax.transAxes, ha="right", fontsize=8, color="tab:purple")
    ax.text(0.6, 0.56, "healthy", transform=ax.transAxes, ha="center", fontsize=8)  # just above the rank line
    ax.set_title("collapse at a glance", fontsize=9)
    return ax
