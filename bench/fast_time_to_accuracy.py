"""The fast regime's headline figure: PublicTest overall accuracy against wall-clock minutes, the
ferplus-fast recipe's runs beside ce-dlib-ferplus's, from the committed records (docs/fast_regime.md).

    python bench/fast_time_to_accuracy.py [--out bench/ferplus_fast_time_to_accuracy.png]

Each run's curve is its evaluations' ``time`` (metrics.jsonl: seconds of the training loop, summed over
a resumed run's processes) against the test overall accuracy of the evaluated model (with ``--ema`` the
average). ce-dlib comes from ``bench/records/ferplus_fast/baseline`` when that table has run (the same
machine as the recipe); otherwise from ``bench/records/ferplus`` (today's regime as first measured, on
another machine: the legend names each run's machine from its done.json). Runs timed on another machine than
the baseline's are drawn dashed and faint: their minutes do not compare with its.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # utils/, which compare_records reads
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_records import finished_run  # noqa: E402  (bench/, beside this file)

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "bench" / "records"
TARGET = 84.0  # Barsoum et al.'s VGG13 with majority labels: 83.85, rounded up as the issue's target


def runs(folder: Path) -> list[tuple[str, list[dict], dict]]:
    """(seed folder name, evaluations, done.json) of every finished run under ``folder``."""
    found = []
    for seed_dir in sorted(folder.glob("seed*")):
        finished = finished_run(seed_dir)
        if finished is not None:
            found.append((seed_dir.name, *finished))
    return found


def machine(done: dict) -> str:
    return done.get("machine", "unknown machine").split(",")[0] + f", {done.get('threads', '?')} thread(s)"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "ferplus_fast_time_to_accuracy.png")
    args = p.parse_args(argv)
    baseline = RECORDS / "ferplus_fast" / "baseline" / "ce-dlib"
    if not runs(baseline):
        baseline = RECORDS / "ferplus" / "ce-dlib"
    curves = [("ferplus-fast", RECORDS / "ferplus_fast" / "full" / "fast", "tab:blue"),
              ("ce-dlib-ferplus", baseline, "tab:gray")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    baseline_machines = {done.get("machine") for _, _, done in runs(baseline)}
    for label, folder, colour in curves:
        for seed, records, done in runs(folder):
            minutes = [r["time"] / 60 for r in records]
            accuracy = [r["overall_acc"] * 100 for r in records]
            # Minutes compare only on one machine: runs on another machine than the baseline's are drawn faint.
            same = done.get("machine") in baseline_machines
            ax.plot(minutes, accuracy, marker="o", markersize=3, color=colour, alpha=1.0 if same else 0.35,
                    linestyle="-" if same else "--",
                    label=f"{label} {seed} ({machine(done)}{'' if same else '; another machine'})")
    ax.axhline(TARGET, color="tab:red", linestyle="--", linewidth=1, label=f"{TARGET:.0f}% (Barsoum et al.'s VGG13: 83.85)")
    ax.set_xlabel("minutes of training (image caching excluded)")
    ax.set_ylabel("PublicTest overall accuracy (%)")
    ax.set_title("FERPlus, 8 classes, majority labels: accuracy against wall clock")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
