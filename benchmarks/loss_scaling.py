"""Time and peak memory of forward+backward against d, for every method of both losses.

    python benchmarks/loss_scaling.py                      # the full sweep: d = 256 .. 16384, n = 256
    python benchmarks/loss_scaling.py --dims 256 1024 --repeats 3 --out /tmp/x.json
    python benchmarks/loss_scaling.py --targets-only 10    # only the two timing targets, 10 times

Prints a table per loss and the target ratios of the core issue, and writes every measurement
to JSON. Each case runs in its own process (see decorr_lite.benchmark), one after the other; the
two timing targets, fft(b = d) / rfft and fft(small b) / fft(b = d), are also timed with the two
sides alternated in one process (measure_pair), and judged on those.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

from decorr_lite.benchmark import Case, measure_isolated, measure_pair_isolated, resolve_device

MB = 2**20


def cases_for(loss: str, n: int, d: int, small_block: int, device: str) -> list[Case]:
    if loss == "rfft":
        return [Case("rfft", n, d, device=device)]
    cases = [Case(loss, n, d, "exact", device=device), Case(loss, n, d, "gram", device=device)]
    cases.append(Case(loss, n, d, "fft", None, device=device))
    if small_block < d:
        cases.append(Case(loss, n, d, "fft", small_block, device=device))
    return cases


def print_table(rows: list[dict], loss: str) -> None:
    mine = [r for r in rows if r["loss"] in (loss, "rfft")]
    labels = list(dict.fromkeys(r["label"] for r in mine))
    dims = sorted({r["d"] for r in mine})
    by_key = {(r["label"], r["d"]): r for r in mine}
    print(f"\n{loss}: forward+backward, n = {mine[0]['n']}, median time [ms] / peak memory above inputs [MB]")
    print(f"{'d':>7} " + " ".join(f"{label:>20}" for label in labels))
    for d in dims:
        cells = []
        for label in labels:
            r = by_key.get((label, d))
            cells.append(f"{r['seconds'] * 1e3:9.2f} / {r['peak_bytes'] / MB:7.1f}" if r else f"{'-':>20}")
        print(f"{d:>7} " + " ".join(f"{c:>20}" for c in cells))


def middle_dim(dims) -> int:
    """Where the small-block targets are read: d = 8192 if measured, else the largest d."""
    return 8192 if 8192 in dims else max(dims)


def target_ratios(rows: list[dict], loss: str, small_block: int) -> dict:
    """The core issue's targets, as ratios of the separate-process measurements of this run."""
    by_key = {(r["loss"], r["label"], r["d"]): r for r in rows}
    out = {}
    dmax = max(r["d"] for r in rows)
    t = lambda label, d, which=loss: by_key.get((which, label, d), {}).get("seconds")  # noqa: E731
    if t("exact", dmax) and t("gram", dmax):
        out[f"exact / gram time at d={dmax} (target >= 40)"] = t("exact", dmax) / t("gram", dmax)
    if t("fft b=d", dmax) and t("rfft x2", dmax, "rfft"):
        out[f"fft(b=d) / two rfft at d={dmax}, separate processes"] = t("fft b=d", dmax) / t("rfft x2", dmax, "rfft")
    d_mid = middle_dim({r["d"] for r in rows})
    small = by_key.get((loss, f"fft b={small_block}", d_mid))
    if small and t("fft b=d", d_mid):
        out[f"fft(b={small_block}) / fft(b=d) time at d={d_mid}, separate processes"] = small["seconds"] / t(
            "fft b=d", d_mid
        )
        out[f"fft(b={small_block}) peak MB above inputs at d={d_mid} (target < 256)"] = small["peak_bytes"] / MB
    return out


def run_meta(args, device: str, argv) -> dict:
    return {
        "torch": torch.__version__,
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "n": args.n,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
    }


def timing_targets(args, device: str) -> tuple[dict, dict]:
    """Per loss, the alternated measurements of fft(b = d) against two rfft at the largest d and
    of fft(small b) against fft(b = d) at d = 8192 (each in a fresh process)."""
    dmax, d_mid, pairs, block_pairs = max(args.dims), middle_dim(args.dims), {}, {}
    for loss in args.losses:
        pairs[loss] = measure_pair_isolated(
            Case(loss, args.n, dmax, "fft", device=device), Case("rfft", args.n, dmax, device=device), args.pairs
        )
        if args.small_block < d_mid:
            block_pairs[loss] = measure_pair_isolated(
                Case(loss, args.n, d_mid, "fft", args.small_block, device=device),
                Case(loss, args.n, d_mid, "fft", device=device),
                args.pairs,
            )
    return pairs, block_pairs


def repeat_targets(args, device: str, argv) -> int:
    """``--targets-only``: the timing targets' ratios of medians, run after run, then their spread."""
    dmax, d_mid = max(args.dims), middle_dim(args.dims)
    names = {
        "rfft": f"fft(b=d) / two rfft at d={dmax} (target <= 6)",
        "block": f"fft(b={args.small_block}) / fft(b=d) at d={d_mid} (target <= 2)",
    }
    runs = []
    for run in range(args.targets_only):
        pairs, block_pairs = timing_targets(args, device)
        runs.append({"pairs": pairs, "block_pairs": block_pairs})
        line = [
            f"{loss} {key} {ratios[loss]['median_ratio']:.2f}"
            for loss in args.losses
            for key, ratios in (("rfft", pairs), ("block", block_pairs))
            if loss in ratios
        ]
        print(f"run {run + 1}: " + ", ".join(line), flush=True)
    print("\nratio of the medians, over the runs: min / median / max (runs above the target)")
    for loss in args.losses:
        for key, limit, field in (("rfft", 6, "pairs"), ("block", 2, "block_pairs")):
            values = [r[field][loss]["median_ratio"] for r in runs if loss in r[field]]
            if values:
                over = sum(v > limit for v in values)
                print(
                    f"  {loss:>6} {names[key]}: {min(values):.2f} / {statistics.median(values):.2f} / "
                    f"{max(values):.2f} ({over} of {len(values)})"
                )
    out = args.out or Path("benchmarks/results/loss_scaling_targets.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": run_meta(args, device, argv), "runs": runs}, indent=1))
    print(f"\nwrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--losses", nargs="+", choices=["vicreg", "barlow"], default=["barlow", "vicreg"])
    parser.add_argument("--small-block", type=int, default=128, help="the small block size b measured besides b = d")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per case; the median is reported")
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="stop repeating a case after this long (>= 3 passes)"
    )
    parser.add_argument(
        "--min-seconds", type=float, default=0.5, help="keep repeating a fast case until this long (<= 100 passes)"
    )
    parser.add_argument("--pairs", type=int, default=40, help="alternated passes per timing target (default 40)")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto"')
    parser.add_argument(
        "--targets-only",
        type=int,
        metavar="RUNS",
        default=0,
        help="skip the sweep; time the two alternated timing targets RUNS times each, in fresh "
        "processes, to see how far they move on this host",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/loss_scaling.json, or loss_scaling_targets.json)",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.targets_only:
        return repeat_targets(args, device, argv)
    args.out = args.out or Path("benchmarks/results/loss_scaling.json")

    rows = []
    for d in args.dims:
        for loss in ["rfft", *args.losses]:
            for case in cases_for(loss, args.n, d, args.small_block, device):
                row = measure_isolated(case, args.repeats, args.max_seconds, args.min_seconds)
                rows.append(row)
                print(
                    f"  measured {loss:>6} {row['label']:>10} d={d:<6} {row['seconds'] * 1e3:10.2f} ms "
                    f"{row['peak_bytes'] / MB:9.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )

    # The two timing targets again, each side alternated with the other in one process
    # (decorr_lite.benchmark.measure_pair): they take milliseconds, and on a shared host separate
    # processes minutes apart see different machines.
    dmax, d_mid = max(args.dims), middle_dim(args.dims)
    pairs, block_pairs = timing_targets(args, device)

    ratios = {}
    for loss in args.losses:
        print_table(rows, loss)
        ratios[loss] = target_ratios(rows, loss, args.small_block)
        ratios[loss][f"fft(b=d) / two rfft at d={dmax}, alternated, medians (target <= 6)"] = pairs[loss][
            "median_ratio"
        ]
        ratios[loss][f"fft(b=d) / two rfft at d={dmax}, alternated, minima"] = pairs[loss]["min_ratio"]
        if loss in block_pairs:
            name = f"fft(b={args.small_block}) / fft(b=d) time at d={d_mid}, alternated"
            ratios[loss][f"{name}, medians (target <= 2)"] = block_pairs[loss]["median_ratio"]
            ratios[loss][f"{name}, minima"] = block_pairs[loss]["min_ratio"]
        for name, value in ratios[loss].items():
            print(f"  {name}: {value:.2f}")

    meta = run_meta(args, device, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "ratios": ratios, "rows": rows, "pairs": pairs, "block_pairs": block_pairs}, indent=1)
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
