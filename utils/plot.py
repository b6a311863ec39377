"""Training curves from metrics.jsonl: loss terms and overall / mean class accuracy per step.

    python -m utils.plot output/demo                      # writes output/demo/curves.png
    python -m utils.plot output/mek output/ce --out cmp.png   # several runs on one figure

``plot_curves(run_dir)`` is called by training at every evaluation, so it uses the Agg canvas
directly (no pyplot state, no display), reads the file tolerantly (a half-written last line is
skipped) and never raises: it returns None when there is nothing to plot or the figure cannot
be written. The PNG is written to a temporary name and renamed, so a viewer never sees half a file.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

ACCURACIES = (("overall_acc", "overall"), ("mean_acc", "mean class"))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl that have a step; unparsable lines are skipped."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    keys = {k for r in records for k, v in r.items() if (k == "loss" or k.startswith("loss_")) and isinstance(v, (int, float))}
    return sorted(keys, key=lambda k: (k != "loss", k))


def _draw(runs: list[tuple[str, list[dict[str, Any]]]], out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(figure)
    loss_ax, acc_ax = figure.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    styles = ["-", "--", ":", "-."]
    several = len(runs) > 1
    for (name, records), colour in zip(runs, colours):
        prefix = f"{name}: " if several else ""
        for i, key in enumerate(_loss_keys(records)):
            x, y = _series(records, key)
            loss_ax.plot(x, y, styles[i % len(styles)], color=colour if several else f"C{i % 10}",
                         marker="." if len(x) < 30 else None, label=prefix + key)
        for i, (key, label) in enumerate(ACCURACIES):
            x, y = _series(records, key)
            acc_ax.plot(x, [v * 100 for v in y], styles[i], color=colour if several else f"C{i}",
                        marker="." if len(x) < 30 else None, label=prefix + label)
    loss_ax.set(xlabel="step", ylabel="loss", title="loss terms")
    acc_ax.set(xlabel="step", ylabel="accuracy (%)", title="test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    try:
        figure.savefig(tmp, dpi=90)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Write RUN_DIR/curves.png (or ``out``) from RUN_DIR/metrics.jsonl; None if nothing to plot."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    if not records:
        return None
    try:
        return _draw([(run_dir.name, records)], Path(out) if out else run_dir / "curves.png")
    except (OSError, ValueError, RuntimeError):
        return None


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path | None:
    """Several runs overlaid on one figure (one colour per run); None if none has records."""
    runs = [(Path(d).resolve().name, read_records(Path(d) / "metrics.jsonl")) for d in run_dirs]
    runs = [(name, records) for name, records in runs if records]
    if not runs:
        return None
    return _draw(runs, Path(out))


def main(argv: list[str] | None = None) -> Path:
    from utils.logging import error_exit

    p = argparse.ArgumentParser("python -m utils.plot", description="Plot training curves from metrics.jsonl")
    p.add_argument("run_dirs", nargs="+", help="run folders (train.py --output), each with metrics.jsonl")
    p.add_argument("--out", default=None, help="figure to write (default: RUN_DIR/curves.png for one run, "
                                               "curves.png here for several)")
    args = p.parse_args(argv)
    for run_dir in args.run_dirs:
        metrics = Path(run_dir) / "metrics.jsonl"
        if not metrics.is_file():
            error_exit(f"{run_dir}: no metrics.jsonl (not a train.py --output folder?)")
        if not read_records(metrics):
            error_exit(f"{metrics}: no evaluation records yet")
    out = Path(args.out) if args.out else (Path(args.run_dirs[0]) / "curves.png" if len(args.run_dirs) == 1
                                           else Path("curves.png"))
    try:
        written = plot_runs(args.run_dirs, out)
    except OSError as exc:
        error_exit(f"--out {out}: cannot write ({exc.strerror or exc})")
    print(f"wrote {written}")
    return written


if __name__ == "__main__":
    main()
