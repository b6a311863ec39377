"""Each method's verdict against cross-entropy in two regimes side by side, from committed records.

    python bench/ferplus_regimes.py                                   # the dlib regime against the fast one
    python bench/ferplus_regimes.py --weak bench/records/ferplus_compare --strong bench/records/ferplus_fast/methods7

Both folders hold bench/compare.py records (``ARM/seedS/metrics.jsonl``). For every arm found in either,
at the validation-chosen evaluation (bench/compare_report.py's ``collect``: the highest validation mean class
accuracy, the first of ties) and only over finished runs: the paired difference to ``--baseline`` over the
seeds both have (mean ± std), in mean class and overall accuracy on the test split, with the noise rule of
compare_report.py's ``verdict`` (2 x the larger of the baseline's std over seeds and the paired diffs' std).
A markdown table, one row per arm: the weak regime's columns, then the strong regime's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compare_report import collect, mean_std, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEAK = ROOT / "bench" / "records" / "ferplus_compare"
STRONG = ROOT / "bench" / "records" / "ferplus_fast" / "methods7"


def recorded_arm(name: str, seeds: list[int]) -> SimpleNamespace:
    """What compare_report.collect reads of an arm: its name and seeds (the method and flags are not used here)."""
    return SimpleNamespace(name=name, seeds=seeds, method="", flags_text="")


def finished_runs(records: Path) -> dict[str, dict[int, dict]]:
    """arm -> seed -> collect()'s row, for the finished runs under a records folder."""
    arms = []
    for arm_dir in sorted(p for p in records.iterdir() if p.is_dir()) if records.is_dir() else []:
        seeds = sorted(int(p.name[4:]) for p in arm_dir.glob("seed*") if p.name[4:].isdigit())
        arms.append(recorded_arm(arm_dir.name, seeds))
    runs: dict[str, dict[int, dict]] = {}
    for row in collect(records, arms):
        if row["status"] == "done":
            runs.setdefault(row["arm"], {})[row["seed"]] = row
    return runs


def paired(runs: dict[str, dict[int, dict]], arm: str, baseline: str, key: str) -> tuple[str, str]:
    """('+1.23 ± 0.45 (n)', verdict word) of arm minus baseline at the chosen evaluation, over shared seeds."""
    base, mine = runs.get(baseline, {}), runs.get(arm, {})
    seeds = sorted(set(base) & set(mine))
    if arm == baseline:
        values = [base[s]["best"][key] for s in sorted(base)]
        if not values:
            return "-", ""
        m, s = mean_std(values)
        return f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if s is not None else "") + f" ({len(values)})", "baseline"
    if not seeds:
        return "-", ""
    diffs = [mine[s]["best"][key] - base[s]["best"][key] for s in seeds]
    m, s = mean_std(diffs)
    _, base_std = mean_std([base[s]["best"][key] for s in sorted(base)]) if base else (0.0, None)
    word = verdict(diffs, base_std).split(" (")[0]
    return f"{100 * m:+.2f}" + (f" ± {100 * s:.2f}" if s is not None else "") + f" ({len(seeds)})", word


def table(weak: Path, strong: Path, baseline: str = "ce") -> list[str]:
    regimes = [finished_runs(weak), finished_runs(strong)]
    arms = [baseline] + sorted({a for runs in regimes for a in runs} - {baseline})
    lines = ["| arm | weak: mean class | weak: overall | strong: mean class | strong: overall |",
             "|---|---|---|---|---|"]
    for arm in arms:
        cells = []
        for runs in regimes:
            for key in ("mean_acc", "overall_acc"):
                value, word = paired(runs, arm, baseline, key)
                cells.append(value if not word or word == "baseline" else f"{value}, {word}")
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weak", type=Path, default=WEAK, help="records of the first regime (default: the dlib one)")
    parser.add_argument("--strong", type=Path, default=STRONG, help="records of the second (default: the fast one)")
    parser.add_argument("--baseline", default="ce", help="the arm the differences are taken against")
    args = parser.parse_args(argv)
    for flag, path in (("--weak", args.weak), ("--strong", args.strong)):
        if not path.is_dir():
            sys.exit(f"error: {flag}: {path} is not a records folder")
    lines = table(args.weak, args.strong, args.baseline)
    for name, path in (("weak", args.weak), ("strong", args.strong)):
        runs = [row for seeds in finished_runs(path).values() for row in seeds.values()]
        classes = {len(row["classes"]) for row in runs}
        print(f"{name}: {path}, {len(runs)} finished runs, {'/'.join(map(str, sorted(classes))) or '?'} classes")
    print("Paired differences to `{0}` at the validation-chosen step, percentage points, mean ± std (seeds); "
          "the baseline's row: its accuracy.".format(args.baseline))
    print()
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
