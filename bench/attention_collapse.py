"""The first evaluations of attention-consistency runs, from their records (docs/attention_consistency.md).

    python bench/attention_collapse.py bench/records/ferplus_compare --arms ce,eac,mek,mek-rac --evals 6
    python bench/attention_collapse.py bench/records/ferplus_fast/attention

For each arm and seed under a compare.py records folder (``ARM/seedS/metrics.jsonl``, ``config.json``), one
line per evaluation: the step, PublicTest mean class accuracy (of the weight average in --ema runs; ``--online``:
of the trained model), how many classes have zero recall (a collapse
predicts one or two classes), the classification term and the weighted attention term (lambda x the term's
mean since the previous evaluation, weighted by its lambda at the evaluation's step: EAC's ``--eac-lambda``,
MEK's ``--rac-weight`` times its deferred ramp where one is set), and their ratio. Markdown, one table per arm.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ATTENTION_TERMS = {"eac": "eac_lambda", "rac": "rac_weight"}
CLASSIFICATION_TERMS = ("ce", "rsl", "focal", "ldam")


def attention_lambda(config: dict, term: str, step: int) -> float:
    """The attention term's weight at ``step``: its flag's value, times MEK's deferred ramp (0 before
    --mek-start-step, then linear over --mek-ramp-steps, as methods/mek.py's set_step)."""
    weight = float(config.get(ATTENTION_TERMS[term], 0.0))
    start, ramp = int(config.get("mek_start_step") or 0), int(config.get("mek_ramp_steps") or 0)
    if step < start:
        return 0.0
    return weight * (min(1.0, (step - start + 1) / ramp) if ramp else 1.0)


def early_rows(run: Path, evals: int, network: str = "") -> list[dict]:
    """The first ``evals`` evaluations of one run (``ARM/seedS``), with the terms named and weighted;
    ``network`` "online_" reads the trained model's accuracies of a --ema run instead of the average's."""
    if not (run / "config.json").is_file():
        sys.exit(f"error: {run / 'config.json'}: missing (a compare.py record holds config.json beside metrics.jsonl)")
    config = json.loads((run / "config.json").read_text())
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines()[:evals]:
        record = json.loads(line)
        terms = {k[len("loss_"):]: v for k, v in record.items() if k.startswith("loss_")}
        attention = next((t for t in ATTENTION_TERMS if t in terms), None)
        classification = sum(v for k, v in terms.items() if k in CLASSIFICATION_TERMS)
        weighted = terms[attention] * attention_lambda(config, attention, record["step"]) if attention else None
        recall = record[f"{network}per_class_acc"]
        rows.append({"step": record["step"], "mean_acc": 100 * record[f"{network}mean_acc"],
                     "overall_acc": 100 * record[f"{network}overall_acc"],
                     "zero_recall": sum(1 for a in recall if a == 0),
                     "classes": len(recall), "classification": classification,
                     "attention": attention, "raw_attention": terms.get(attention) if attention else None,
                     "weighted_attention": weighted})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", help="a compare.py records folder (ARM/seedS/metrics.jsonl)")
    parser.add_argument("--arms", default=None, help="comma-separated arms (default: every arm there)")
    parser.add_argument("--evals", type=int, default=9, help="evaluations per run, from the first")
    parser.add_argument("--online", action="store_true",
                        help="the trained (online) model's accuracies of --ema runs, not the weight average's")
    args = parser.parse_args(argv)
    root = Path(args.records)
    if not root.is_dir():
        sys.exit(f"error: {root}: no such records folder")
    arms = args.arms.split(",") if args.arms else sorted(p.name for p in root.iterdir() if p.is_dir())
    for arm in arms:
        runs = sorted((root / arm).glob("seed*/metrics.jsonl"))
        if not runs:
            print(f"error: {root / arm}: no finished or running seed (seedS/metrics.jsonl)", file=sys.stderr)
            continue
        print(f"\n### {arm}\n")
        print("| seed | step | mean class | overall | classes at zero recall | classification term "
              "| lambda x attention term | ratio | raw attention term |")
        print("|---|---|---|---|---|---|---|---|---|")
        for metrics in runs:
            for row in early_rows(metrics.parent, args.evals, "online_" if args.online else ""):
                weighted, raw = row["weighted_attention"], row["raw_attention"]
                ratio = "-" if weighted is None else f"{weighted / row['classification']:.3f}"
                weighted_text = "-" if weighted is None else f"{weighted:.4f}"
                raw_text = "-" if raw is None else f"{raw:.4f}"
                print(f"| {metrics.parent.name[4:]} | {row['step']} | {row['mean_acc']:.1f} | {row['overall_acc']:.1f} "
                      f"| {row['zero_recall']} of {row['classes']} | {row['classification']:.3f} "
                      f"| {weighted_text} | {ratio} | {raw_text} |")


if __name__ == "__main__":
    main()
