"""What a run measures: at each evaluation point, and at the end.

Every measurement runs on fixed sets drawn once per seed (``evaluation_sets``), after BatchNorm's
statistics are re-estimated on the same images (``recalibrated``), and in float64.
``view_retrieval`` probes a trained encoder on a few images (the shipped samples will do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import diagnostics
from .augment import normalize
from .config import TrainConfig
from .data import balanced_subset
from .losses import barlow_twins_terms, batch_standardize, covariance_loss, cross_correlation
from .settings import autocast


@torch.inference_mode()
def recalibrated(model, images: torch.Tensor, device: torch.device, batch_size: int = 500, precision: str = "fp32"):
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``images``.

    Evaluation needs BatchNorm's running statistics, and during training they lag behind the
    weights (momentum 0.1); at initialisation they are the defaults (mean 0, variance 1), which
    makes an untrained projector's eval-mode outputs tiny and every scale measurement
    meaningless. Re-estimating them exactly ("precise BN", Wu & Johnson 2021) on the same
    images at every evaluation point makes all points, step 0 included, comparable. The model
    being trained is left untouched. ``precision``: the autocast of the forward passes (the
    statistics themselves are kept in float32).
    """
    import copy

    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        if chunk.shape[0] > 1:
            with autocast(device, precision):
                model(normalize(chunk.to(device)))
    return model.eval()


@torch.inference_mode()
def embed(
    model, images: torch.Tensor, device: torch.device, batch_size: int = 1000, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features and projector embeddings (float32, on the CPU) of uint8 images, in
    eval mode, the forward passes under the autocast of ``precision``."""
    was_training = model.training
    model.eval()
    features, embeddings = [], []
    for start in range(0, images.shape[0], batch_size):
        x = normalize(images[start : start + batch_size].to(device))
        with autocast(device, precision):
            f = model.features(x)
            z = model.projector(f)
        features.append(f.float().cpu())
        embeddings.append(z.float().cpu())
    model.train(was_training)
    return torch.cat(features), torch.cat(embeddings)


def _evaluate(model, config, device, bank, queries, calibration, probe_views, precision) -> tuple[dict, dict, dict]:
    """Scalars for the history and arrays (spectrum, std, matrices) at one evaluation point, and
    the backbone features and collapse report behind them (which the final evaluation reuses
    when it evaluates on the same sets). The forward passes run in the training's ``precision``;
    every measurement is float64."""
    bank_x, bank_y = bank
    query_x, query_y = queries
    model = recalibrated(model, calibration, device, precision=precision)
    bank_f, _ = embed(model, bank_x, device, precision=precision)
    query_f, query_z = embed(model, query_x, device, precision=precision)
    check_not_diverged(config, {"the backbone features": bank_f, "the embeddings": query_z})
    spectrum = diagnostics.singular_spectrum(query_z)  # once: the rank and the figure both need it
    report = diagnostics.collapse_report(query_z, spectrum=spectrum)
    scalars = {
        "knn_top1": diagnostics.knn_accuracy(bank_f, bank_y, query_f, query_y, k=config.knn_k),
        **_collapse_scalars(report),
    }
    # The probe batch: the same two augmented views of the same images at every evaluation.
    with torch.inference_mode(), autocast(device, precision):
        z1, z2 = (model(v.to(device)).double().cpu() for v in probe_views)
    d, m = z1.shape[1], min(config.matrix_dims, z1.shape[1])
    zc = z1 - z1.mean(dim=0)
    # Off-diagonal sums of squares of the full d x d matrices, without forming them (Gram route).
    cov_off = float(covariance_loss(z1, method="gram")) * d
    corr = barlow_twins_terms(z1, z2, method="gram")
    scalars["cov_offdiag_rms"] = math.sqrt(max(cov_off, 0.0) / (d * (d - 1)))
    scalars["corr_offdiag_rms"] = math.sqrt(max(float(corr["off_diagonal"]), 0.0) / (d * (d - 1)))
    scalars["corr_diag_rms_error"] = math.sqrt(float(corr["on_diagonal"]) / d)
    # The same off-diagonal RMS relative to the mean diagonal entry: scale-free, so that a matrix
    # whose diagonal grows (training makes dimensions spread and views agree) is judged by how
    # far from diagonal it is, not by its size. The diagonals are cheap: variances and the
    # per-dimension correlations of the two views.
    cov_diag = float(zc.square().sum(dim=0).mean()) / (zc.shape[0] - 1)
    corr_diag = float((batch_standardize(z1) * batch_standardize(z2)).mean(dim=0).mean())
    scalars["cov_offdiag_relative"] = scalars["cov_offdiag_rms"] / max(cov_diag, 1e-12)
    scalars["corr_offdiag_relative"] = scalars["corr_offdiag_rms"] / max(abs(corr_diag), 1e-12)
    arrays = {
        "spectrum": spectrum.numpy(),
        "std_per_dim": diagnostics.std_per_dim(query_z).numpy(),
        "covariance": (zc[:, :m].T @ zc[:, :m] / (zc.shape[0] - 1)).numpy(),
        "cross_correlation": cross_correlation(z1[:, :m], z2[:, :m]).numpy(),
    }
    return scalars, arrays, {"bank_f": bank_f, "query_f": query_f, "report": report, "knn": scalars["knn_top1"]}


@dataclass(frozen=True)
class _EvaluationSets:
    final_bank: tuple  # (images, labels) of training images: the final kNN bank and probe fit
    final_queries: tuple  # (images, labels) of test images
    bank: tuple  # the evaluation points' subsets of the two (the same objects when as large)
    queries: tuple
    calibration: torch.Tensor  # the images precise BN re-estimates BatchNorm on
    probe_views: tuple  # the two augmented views of the probe batch, the same at every point


def _evaluation_sets(config: TrainConfig, train: tuple, test: tuple, augment, device) -> _EvaluationSets:
    """Fixed evaluation sets, drawn once per seed: the final evaluation's kNN bank (training
    images) and queries (test images); the evaluation points use balanced subsets of them, all
    of them when as large (the classroom settings), so that a curve's last point is the final
    evaluation and its first the untrained encoder's; BatchNorm is re-estimated on the same
    bn_images of the bank at every point."""

    def pick(x, y, size, seed):
        if size is None or size >= len(y):
            return x, y
        index = torch.from_numpy(balanced_subset(y.numpy(), size, seed=seed))
        return x[index], y[index]

    final_bank = pick(*train, config.final_bank, config.seed + 6)
    final_queries = pick(*test, config.final_queries, config.seed + 7)
    probe_images = pick(*test, config.probe_batch, config.seed + 3)[0].to(device)
    return _EvaluationSets(
        final_bank=final_bank,
        final_queries=final_queries,
        bank=pick(*final_bank, config.eval_bank, config.seed + 1),
        queries=pick(*final_queries, config.eval_queries, config.seed + 2),
        calibration=pick(*final_bank, config.bn_images, config.seed + 1)[0],
        probe_views=augment(probe_images, seed=config.seed + 4),
    )


def _collapse_scalars(report: diagnostics.CollapseReport) -> dict:
    """What a run records of a collapse report, at every evaluation point and at the end."""
    return {name: getattr(report, name) for name in COLLAPSE_SCALARS}


COLLAPSE_SCALARS = ("effective_rank", "leading_share", "median_std", "min_std", "fraction_below_margin", "verdict")


def check_not_diverged(config: TrainConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Training diverged if an update made the weights, or the embeddings they compute, NaN or
    Inf (the loss before it was finite): say so, and what to change, before evaluation meets them."""
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise FloatingPointError(
            f"training diverged: after the last update {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''} "
            f"became NaN or Inf; lower lr (now {config.lr})"
        )


def _final_evaluation(model, config, device, bank, queries, calibration, precision, reuse=None) -> dict:
    (bank_x, bank_y), (query_x, query_y) = bank, queries
    if reuse is None:
        model = recalibrated(model, calibration, device, precision=precision)
        bank_f, _ = embed(model, bank_x, device, precision=precision)
        query_f, query_z = embed(model, query_x, device, precision=precision)
        report = diagnostics.collapse_report(query_z)
        knn = diagnostics.knn_accuracy(bank_f, bank_y, query_f, query_y, k=config.knn_k)
    else:  # the same model, sets and re-estimated BatchNorm as the last evaluation point
        bank_f, query_f, report, knn = (reuse[k] for k in ("bank_f", "query_f", "report", "knn"))
    return {
        "knn_top1": knn,
        "linear_probe_top1": diagnostics.linear_probe(bank_f, bank_y, query_f, query_y, seed=config.seed),
        **_collapse_scalars(report),
        "bank_size": int(bank_x.shape[0]),
        "query_size": int(query_x.shape[0]),
    }


@torch.inference_mode()
def view_retrieval(encoder, images: torch.Tensor, *, draws: int = 50, seed: int = 0) -> dict:
    """How often an encoder recognises an image from another view of it: for each of ``draws``
    draws of two augmented views of ``images`` (uint8, (N, 3, 32, 32)), the share of view-1
    features whose most cosine-similar view-2 feature is the same image's (chance: 1 / N).
    This is what the invariance term trains for, and it needs no labels and few images.

    Returns ``{"accuracy": mean over draws, "per_draw": array, "similarity": the N x N cosine
    similarities of the first draw (row i: view 1 of image i against view 2 of every image)}``.
    ``encoder`` maps normalised images to features (``bank.load_encoder`` or ``model.encoder``)."""
    from .augment import TwoViews

    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be (N, 3, H, W) with N >= 2, got {tuple(images.shape)}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    was_training = encoder.training
    encoder.eval()
    views = TwoViews()
    per_draw, first = [], None
    for draw in range(draws):
        v1, v2 = views(images, seed=seed + draw)
        f1 = torch.nn.functional.normalize(encoder(v1).double(), dim=1)
        f2 = torch.nn.functional.normalize(encoder(v2).double(), dim=1)
        similarity = f1 @ f2.T
        per_draw.append(float((similarity.argmax(dim=1) == torch.arange(len(images))).double().mean()))
        if first is None:
            first = similarity.numpy()
    encoder.train(was_training)
    return {"accuracy": float(np.mean(per_draw)), "per_draw": np.array(per_draw), "similarity": first}
