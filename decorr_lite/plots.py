"""Figures for the notebooks. Each function draws on a matplotlib Axes it is given (or makes a
figure) and returns it, so notebooks stay thin and tests can check what was drawn.

Colour conventions: view 1 blue, view 2 orange; matrices in a diverging map centred at 0
(``RdBu_r``: red positive, blue negative, white zero), with symmetric limits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import diagnostics

if TYPE_CHECKING:
    from .toy import ToyRun

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


def embedding_cloud(
    ax,
    z1,
    z2=None,
    *,
    title: str = "embeddings (2 leading PCs of view 1)",
    max_points: int = 400,
    lim: float | None = None,
):
    """Scatter the two views on view 1's first two principal axes, with a line per pair.
    ``lim``: the half-width of both axes (give several panels the same one to compare scales);
    by default at least 2 and enough for view 1."""
    a = _np(z1)[:max_points]
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.eye(a.shape[1], 2)
    pa = (a - mean) @ axes
    if z2 is not None:
        pb = (_np(z2)[:max_points] - mean) @ axes
        ax.plot(np.stack([pa[:, 0], pb[:, 0]]), np.stack([pa[:, 1], pb[:, 1]]), color="0.55", lw=0.6, zorder=0)
        ax.scatter(pb[:, 0], pb[:, 1], s=6, color="tab:orange", label="view 2")
    ax.scatter(pa[:, 0], pa[:, 1], s=6, color="tab:blue", label="view 1")
    # the same scale on both axes and at least +-2, so a shrinking cloud looks small
    if lim is None:
        lim = max(2.0, float(np.abs(pa).max()) * 1.1 if pa.size else 2.0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set(xlabel="principal axis 1 of view 1", ylabel="principal axis 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return ax


def same_limits(axes) -> None:
    """Give square panels (``embedding_cloud``) the widest one's limits, so their scales compare."""
    lim = max(max(abs(v) for v in (*ax.get_xlim(), *ax.get_ylim())) for ax in axes)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)


def encoder_weights(ax, weight, clean: int, *, title: str = "", vmax: float | None = None):
    """``|W|`` of a linear encoder (d, inputs) as a heatmap, with the content inputs (the first
    ``clean``) separated from the nuisance ones by a line."""
    w = np.abs(_np(weight))
    image = ax.imshow(w, cmap="Greys", vmin=0, vmax=vmax or float(w.max()), aspect="auto", interpolation="nearest")
    ax.axvline(clean - 0.5, color="tab:red", lw=1.5)
    ax.set(xlabel=f"input coordinate (content 0-{clean - 1} | nuisance)", ylabel="embedding dimension")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def view_gaps(ax, pairs: dict, *, bins: int = 40):
    """Histogram of each input's distance between its two views, ||z1 - z2||, per labelled run
    (``pairs``: label -> (z1, z2))."""
    gaps = {label: np.linalg.norm(_np(a) - _np(b), axis=1) for label, (a, b) in pairs.items()}
    edges = np.linspace(0, max(float(g.max()) for g in gaps.values()), bins + 1)
    for label, g in gaps.items():
        ax.hist(g, bins=edges, histtype="stepfilled", alpha=0.5, label=f"{label} (median {np.median(g):.2f})")
    ax.set(xlabel="distance between the two views of an input", ylabel="inputs")
    ax.set_title("do the two views agree?", fontsize=9)
    ax.legend(fontsize=7)
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
    """Show which entries (i, j) of a d x d matrix are summed into one penalised sum.

    A sum is one wrapped diagonal, shift k = (j - i) mod b, inside one b x b block pair: the colour
    is the shift k and the black lines are the block boundaries, so one colour inside one block is
    one sum. The main diagonal (left to the on-diagonal term) is white. With b = 1 every entry is
    its own block and its own sum; with b = d each colour is one sum.
    """
    b = block_size
    i, j = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    shift = ((j % b - i % b) % b).astype(float)
    shift[i == j] = np.nan
    # a qualitative palette while the shifts fit in it, a cyclic one (neighbours still differ) beyond
    cmap = "tab20" if b <= 20 else "hsv"
    ax.imshow(
        np.ma.masked_invalid(shift), cmap=cmap, vmin=0, vmax=max(b, 20) if b <= 20 else b, interpolation="nearest"
    )
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
    """One series on log-log axes; the fitted slope goes into the legend. The x axis is labelled
    at powers of two only (as 512, 2k, 32k), so that its labels never overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    text = label if slope is None else f"{label} (slope {slope:.2f})"
    ax.loglog(_np(x), _np(y), marker=marker, ms=4, label=text)
    ax.xaxis.set_major_locator(LogLocator(base=4))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:g}k" if v >= 1024 else f"{v:g}"))
    ax.legend(fontsize=7)
    return ax


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


def history_band(ax, runs, key: str, *, label: str | None = None, **kwargs):
    """One recorded quantity over training for a setting trained with several seeds (a list of
    ``TrainResult`` with the same evaluation steps): the mean as a line, the range over the
    seeds (min to max) as a band around it."""
    steps = [e["step"] for e in runs[0].history]
    if any([e["step"] for e in r.history] != steps for r in runs):
        raise ValueError("history_band needs runs evaluated at the same steps (the same setting, other seeds)")
    values = np.array([[e[key] for e in r.history] for r in runs], dtype=float)
    (line,) = ax.plot(steps, values.mean(axis=0), marker="o", ms=3, label=label, **kwargs)
    ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("training step")
    if label:
        ax.legend(fontsize=7)
    return ax


def similarity_matrix(ax, similarity, *, title: str | None = None):
    """An N x N cosine-similarity matrix (rows: view 1 of each image, columns: view 2), on one
    colour scale from -1 to 1; the diagonal holds each image's two views."""
    similarity = _np(similarity)
    ax.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(xlabel="view 2 of image", ylabel="view 1 of image", xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=9)
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


def legend_below(fig, axes, *, title: str | None = None, ncol: int = 5) -> None:
    """Replace the axes' legends by one legend under the figure (each label once), so that no
    legend covers a curve, and lay the figure out with room for it and for ``title``."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    rows = math.ceil(len(handles) / ncol) if handles else 0
    height = fig.get_figheight()
    fig.set_figheight(height + 0.22 * rows)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(ncol, len(handles)),
            fontsize=8,
            frameon=False,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    bottom = (0.22 * rows + 0.05) / fig.get_figheight() if rows else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))


def toy_figure(run: ToyRun, margin: float = 1.0):
    """The toy run's embedding cloud, per-dimension std against the margin, and spectrum."""
    fig, axes = new_axes(3)
    embedding_cloud(axes[0], run.z1, run.z2)
    std_bars(axes[1], run.z1, margin=margin)
    spectrum(axes[2], run.z1)
    report = run.report
    fig.suptitle(
        f"{report.verdict}: median std {report.median_std:.2f}, effective rank "
        f"{report.effective_rank:.1f} of {report.max_rank}, leading direction "
        f"{report.leading_share:.0%}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


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
    axes[0].set_yscale("log")
    axes[0].set_title("effective rank (RankMe) of the embeddings", fontsize=9)
    axes[1].set_title("singular values at the end (normalised)", fontsize=9)
    axes[3].set_title("kNN accuracy of the backbone", fontsize=9)
    legend_below(fig, axes, title=title)
    return fig


def relative_covariance(cov) -> np.ndarray:
    """A covariance matrix divided by its mean diagonal entry (the mean variance): the scale-free
    form in which runs of different spread compare, as the relative off-diagonal measures do."""
    cov = _np(cov)
    return cov / max(float(np.diag(cov).mean()), np.finfo(float).tiny)


def collapse_matrices(runs: dict, *, title: str | None = None):
    """The final probe-batch matrices of labelled runs side by side, all on one colour scale
    (+-1): the covariance of view 1 relative to its mean variance (top row) and the
    cross-correlation C of the two views (bottom row)."""
    fig, axes = new_axes(len(runs), 2, size=2.9)
    axes = axes.reshape(2, len(runs))
    for c, (label, run) in enumerate(runs.items()):
        h = run.history[-1]
        matrix(
            axes[0, c],
            relative_covariance(run.arrays["covariance"][-1]),
            vmax=1.0,
            title=f"{label}\ncovariance / mean variance (rel. off-diag. {h['cov_offdiag_relative']:.2f})",
        )
        matrix(
            axes[1, c],
            run.arrays["cross_correlation"][-1],
            vmax=1.0,
            title=f"C (rel. off-diag. {h['corr_offdiag_relative']:.2f})",
        )
    for ax in axes.ravel():
        ax.title.set_fontsize(8)
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
    cov, corr = relative_covariance(result.arrays["covariance"][at]), result.arrays["cross_correlation"][at]
    fig, axes = new_axes(4, size=3.1)
    # one colour scale, +-1, for every matrix of every run and step, so that "more red" means the same
    matrix(axes[0], cov, title="covariance of $z_1$ / mean variance", vmax=1.0)
    matrix(axes[1], corr, title="cross-correlation C (target: I)", vmax=1.0)
    matrix(axes[2], np.eye(corr.shape[0]), title="the target, I", vmax=1.0)
    history(axes[3], result, "cov_offdiag_relative", label="covariance: off-diagonal RMS / mean variance", upto=at)
    history(axes[3], result, "corr_offdiag_relative", label="C: off-diagonal RMS / mean $C_{ii}$", upto=at)
    history(axes[3], result, "corr_diag_rms_error", label="C: RMS of $1 - C_{ii}$", upto=at)
    steps = [e["step"] for e in result.history]
    axes[3].set_xlim(min(steps) - 0.03 * max(steps[-1], 1), steps[-1] * 1.03 + 1)
    axes[3].set_title(f"full {result.config['dim']} x {result.config['dim']} matrices", fontsize=9)
    m = cov.shape[0]
    step = result.history[at]["step"]
    fig.suptitle(
        title or f"step {step}: leading {m} of {result.config['dim']} dimensions of the probe batch", fontsize=10
    )
    fig.tight_layout()
    return fig


def terms_figure(results: dict, terms: tuple[str, ...], *, title: str | None = None):
    """One panel per loss term: its unweighted value over training for each run (``results``
    maps a label to a run). A term that was off in a run is still measured, without a gradient,
    and drawn dashed."""
    from .losses import loss_spec

    fig, axes = new_axes(len(terms), size=3.1)
    for ax, term in zip(axes, terms):
        for label, run in results.items():
            weight = loss_spec(run.config["loss"]).weights(run.config["weights"]).get(term, 1.0)
            history(ax, run, term, label=label + ("" if weight else " (off)"), ls="-" if weight else "--")
        ax.set_yscale("log")
        ax.set_title(f"{term.replace('_', '-')} term (unweighted)", fontsize=9)
    legend_below(fig, axes, title=title)
    return fig


def view_pairs(images, view1, view2, *, titles=None, mean=None, std=None):
    """A figure of three rows: the images, and the two augmented views of each (normalised views
    are mapped back to colours with ``mean`` and ``std``, CIFAR-10's by default)."""
    from .augment import CIFAR10_MEAN, CIFAR10_STD

    mean = torch.tensor(CIFAR10_MEAN if mean is None else mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD if std is None else std).view(1, 3, 1, 1)
    rows = {
        "image": images.float() / 255 if images.dtype == torch.uint8 else images,
        "view 1": view1.cpu() * std + mean,
        "view 2": view2.cpu() * std + mean,
    }
    n = images.shape[0]
    fig, axes = new_axes(n, 3, size=1.3)
    axes = axes.reshape(3, n)
    for r, (name, batch) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(batch[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0 and titles is not None:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def pipeline_figure(*, feature_dim: int, dim: int, encoder: str = "small ConvNet"):
    """Where each measurement lives: image -> two views -> backbone (features: kNN, linear probe)
    -> projector (embeddings: the loss terms, std, effective rank, leading share) -> loss."""
    from matplotlib.patches import FancyBboxPatch

    fig, _ = new_axes(1)
    fig.clear()
    fig.set_size_inches(9.5, 2.4)
    ax = fig.add_axes((0, 0, 1, 1))
    boxes = [  # (x centre, label, colour)
        (0.09, "an image", "0.92"),
        (0.29, "two random\nviews", "0.92"),
        (0.49, f"backbone\n({encoder})", "#c6dbef"),
        (0.69, "projector\n(3-layer MLP)", "#fdd0a2"),
        (0.89, "loss\n(VICReg or\nBarlow Twins)", "0.92"),
    ]
    width, height, y = 0.12, 0.36, 0.6
    for x, label, colour in boxes:
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.01",
                facecolor=colour,
                edgecolor="0.3",
            )
        )
        ax.text(x, y, label, ha="center", va="center", fontsize=9)
    for (x0, _, _), (x1, _, _) in zip(boxes, boxes[1:]):
        ax.annotate(
            "",
            xy=(x1 - width / 2 - 0.01, y),
            xytext=(x0 + width / 2 + 0.01, y),
            arrowprops=dict(arrowstyle="->", color="0.3"),
        )
    ax.text(0.59, y + 0.05, f"features\n{feature_dim}-d", ha="center", va="bottom", fontsize=8)
    ax.text(0.79, y + 0.05, f"embeddings\nd = {dim}", ha="center", va="bottom", fontsize=8)
    ax.text(0.49, 0.3, "kNN accuracy,\nlinear probe", ha="center", va="top", fontsize=8, color="#08519c")
    ax.text(
        0.69,
        0.3,
        "loss terms, std,\neffective rank,\nleading share",
        ha="center",
        va="top",
        fontsize=8,
        color="#a63603",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_axis_off()
    return fig


def collapse_map(ax, results: dict):
    """Each run as one point: its final median std relative to its untrained encoder's (x) against
    the final share of the variance along the leading direction (y), both on log scales, with the
    thresholds of ``diagnostics.verdict`` drawn: complete collapse left of the red line,
    dimensional collapse above the purple one, "no collapse" in the lower right, and the
    borderline zones between them shaded. A run given as a list of ``TrainResult`` (its seeds)
    is drawn as one point per seed, labelled once."""
    placed = []  # (log x, log y, rows down) of the labels drawn so far
    low, high = diagnostics.COMPLETE_BELOW, diagnostics.DIMENSIONAL_ABOVE
    xs, ys = [low], [high]
    for i, (label, runs) in enumerate(results.items()):
        runs = runs if isinstance(runs, (list, tuple)) else [runs]
        points = [(r.final["median_std"] / r.history[0]["median_std"], r.final["leading_share"]) for r in runs]
        ax.scatter(*zip(*points), s=30, zorder=3, color=f"C{i % 10}")
        xs += [p[0] for p in points]
        ys += [p[1] for p in points]
        x, y = points[0]
        # a point close to one already labelled gets its label one row lower, so that none overlap
        near = [rows for lx, ly, rows in placed if abs(lx - math.log10(x)) < 0.9 and abs(ly - math.log10(y)) < 0.12]
        rows = max(near) + 1 if near else 0
        placed.append((math.log10(x), math.log10(y), rows))
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 3 - 10 * rows), textcoords="offset points")
    band = diagnostics.BAND
    ax.axvline(low, color="tab:red", ls="--", lw=1)
    ax.axhline(high, color="tab:purple", ls="--", lw=1)
    ax.axvspan(low, low * band, color="0.9", zorder=0)
    ax.axhspan(high / band, high, color="0.9", zorder=0)
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(min(xs) / 3, max(xs) * 20),
        ylim=(min(ys) / 2, 2.0),
        xlabel="median std per dimension, relative to the untrained encoder's (final)",
        ylabel="leading direction's share of the variance (final)",
    )
    ax.text(0.02, 0.02, "complete\ncollapse", transform=ax.transAxes, va="bottom", fontsize=8, color="tab:red")
    ax.text(
        0.98, 0.98, "dimensional collapse", transform=ax.transAxes, ha="right", va="top", fontsize=8, color="tab:purple"
    )
    ax.text(0.98, 0.02, "no collapse", transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    ax.set_title("collapse at a glance (grey: borderline)", fontsize=9)
    return ax
