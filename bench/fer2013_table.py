"""Print accuracy tables from the metrics.jsonl files of training runs.

    python bench/fer2013_table.py --title "Protocol 1" NAME=RUN_DIR [NAME=RUN_DIR ...] [--markdown]

Each RUN_DIR holds a metrics.jsonl written by train.py; the row reports its LAST record
(the end of the step budget, not the best checkpoint, so no arm is selected on val/):
overall accuracy, mean class accuracy, macro-F1 and per-class accuracy (recall), in %.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHORT = {"surprise": "sur", "fear": "fea", "disgust": "dis", "happiness": "hap", "sadness": "sad",
         "anger": "ang", "neutral": "neu"}


def last_record(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records[-1] if records else None


def table(title: str, rows: list[tuple[str, Path]], markdown: bool) -> str:
    records = [(name, last_record(d)) for name, d in rows]
    classes = next((r["classes"] for _, r in records if r), [])
    heads = ["arm", "steps", "overall", "mean", "F1"] + [SHORT.get(c, c[:3]) for c in classes]
    lines = []
    for name, r in records:
        if r is None:
            lines.append([name, "-", "(missing)"] + [""] * (len(heads) - 3))
            continue
        lines.append([name, str(r["step"]), f"{r['overall_acc'] * 100:.1f}", f"{r['mean_acc'] * 100:.1f}",
                      f"{r['macro_f1'] * 100:.1f}"] + [f"{a * 100:.1f}" for a in r["per_class_acc"]])
    out = [title]
    if markdown:
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(heads))) + "|")
        out += ["| " + " | ".join(line) + " |" for line in lines]
    else:
        widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(heads)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        out.append(fmt(heads))
        out += [fmt(line) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    p.add_argument("--title", default="")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for item in args.runs:
        if "=" not in item:
            sys.exit(f"error: {item!r} is not NAME=RUN_DIR")
        name, d = item.split("=", 1)
        rows.append((name, Path(d)))
    print(table(args.title, rows, args.markdown))


if __name__ == "__main__":
    main()
