"""The fast regime's ablation table from the committed records (docs/fast_regime.md).

    python bench/fast_ablation_table.py                       # proxy, baseline and full tables
    python bench/fast_ablation_table.py --tables proxy

One markdown row per finished run under ``bench/records/ferplus_fast/<table>/<arm>/seed<S>``
(``bench/ferplus_fast.sh`` writes them): PublicTest overall / mean class accuracy at the validation-chosen
step and at the end, the online model's overall accuracy at the end where a weight average was evaluated,
the vote KL at the chosen step, the wall clock (every process of the run, image caching included;
done.json), images per second of training (steps x batch / wall clock), the threads and the machine.
Arms are listed in ``ORDER`` (the ablation's order), then any others alphabetically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # utils/, which compare_records reads
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_records import finished_run  # noqa: E402  (bench/, beside this file)

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "bench" / "records" / "ferplus_fast"
ORDER = ["r0-ce-dlib", "r1-ema-tta", "r2-r18s2w32", "r3-crop-rotate", "r4-batch-aug", "r5-smooth", "b-s1w32-48",
         "b-s2-64", "b-soft", "b-dlib80", "ce-dlib", "fast", "fast-soft"]


def batch_size(command: dict) -> int:
    argv = command.get("argv", [])
    return int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 64


def short_machine(done: dict) -> str:
    """'AMD EPYC (family 25 model 17), native bf16' from done.json's machine line."""
    return ", ".join(done.get("machine", "unknown machine").split(", ")[:2])


def row(table: str, arm: str, run: Path) -> str | None:
    """The markdown row of one finished run (None while it is unfinished)."""
    finished = finished_run(run)
    if finished is None:
        return None
    records, done = finished
    last, chosen = records[-1], records[-1]["best"]
    command = json.loads((run / "command.json").read_text()) if (run / "command.json").is_file() else {}
    images_per_s = done["total_steps"] * batch_size(command) / done["wall_s"]
    online = f"{100 * last['online_overall_acc']:.2f}" if "online_overall_acc" in last else "-"
    return (f"| {table} | `{arm}` | {run.name[4:]} | {chosen['step']} | {100 * chosen['overall_acc']:.2f} / "
            f"{100 * chosen['mean_acc']:.2f} | {100 * last['overall_acc']:.2f} / {100 * last['mean_acc']:.2f} | {online} "
            f"| {chosen['vote_kl']:.3f} | {done['wall_s'] / 60:.1f} | {images_per_s:.0f} | {done.get('threads', '?')} "
            f"| {short_machine(done)} |")


def arms_in_order(folder: Path) -> list[str]:
    found = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    return [a for a in ORDER if a in found] + sorted(found - set(ORDER))


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, default=RECORDS, help="bench/ferplus_fast.sh's records folder")
    parser.add_argument("--tables", default="proxy,baseline,full,stretch", help="comma-separated tables")
    args = parser.parse_args(argv)
    if not args.records.is_dir():
        sys.exit(f"error: --records: {args.records} is not a folder")
    lines = ["| table | arm | seed | chosen step | overall / mean class (chosen) | overall / mean class (end) "
             "| online (end) | vote KL (chosen) | minutes | images/s | threads | machine |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for table in args.tables.split(","):
        for arm in arms_in_order(args.records / table):
            for run in sorted((args.records / table / arm).glob("seed*")):
                line = row(table, arm, run)
                if line:
                    lines.append(line)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
