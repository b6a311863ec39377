"""The report of a bench/compare.py comparison, from the runs' folders: results.csv (a row per arm
and seed), RESULTS.md (mean and std over seeds, paired differences to the baseline with the noise
rule, every evaluation of every run) and the figures per_class_recall.png and mean_acc_curves.png.

A run's **best** evaluation is train.py's best.pth: with a validation split (train.py's
``--val-fraction`` / ``--val-split official``, whose metrics.jsonl records carry ``val_*`` keys)
the evaluation with the highest validation mean class accuracy, reported on the test split; without
one, the highest test mean class accuracy (optimistic). The first of equal scores, in both."""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from compare_records import is_done, machine_line, read_records, read_timing, total_steps_of

if TYPE_CHECKING:
    from compare import Arm

METRICS = (("overall_acc", "overall"), ("mean_acc", "mean class acc"), ("macro_f1", "macro-F1"))
# Reported where every run recorded them (train.py: ece always, vote_kl / vote_nll on FERPlus's votes);
# KL and NLL in nats, ECE in percent.
DISTRIBUTION_METRICS = (("vote_kl", "KL(votes ‖ model)"), ("vote_nll", "NLL of votes"), ("ece", "ECE"))
TRAJECTORY_COLUMNS = 12  # evaluation steps in RESULTS.md's trajectory table: a wider one does not read


def collect(out: Path, arms: list[Arm]) -> list[dict]:
    """One row per arm and seed that has at least one evaluation."""
    rows = []
    for arm in arms:
        for seed in arm.seeds:
            run_dir = out / arm.name / f"seed{seed}"
            records = read_records(run_dir / "metrics.jsonl")
            if not records:
                continue
            last = records[-1]
            selected_on = "val" if all("val_mean_acc" in r for r in records) else "test"
            score = "val_mean_acc" if selected_on == "val" else "mean_acc"
            best = max(records, key=lambda r: r[score])  # first of ties, as train.py's best.pth
            wall, machine = None, ""
            for name in ("done.json", "wall_time.json"):
                if (run_dir / name).is_file():
                    timing = read_timing(run_dir / name)
                    wall = timing.get("wall_s")
                    if timing.get("machine"):
                        machine = f"{timing['machine']}; {timing.get('threads', '?')} torch threads"
                    break
            try:
                version = json.loads((run_dir / "config.json").read_text()).get("code_version", "")
            except (OSError, ValueError):
                version = ""
            rows.append({"arm": arm.name, "method": arm.method, "flags": arm.flags_text, "seed": seed,
                         "status": "done" if is_done(run_dir) else "incomplete", "total_steps": total_steps_of(run_dir),
                         "wall_s": wall, "code_version": version, "machine": machine, "classes": last["classes"],
                         "last": last, "best": best, "selected_on": selected_on, "evals": records})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    classes = next((r["classes"] for r in rows), [])
    head = ["arm", "method", "flags", "seed", "status", "total_steps", "wall_s", "code_version", "machine"]
    for which in ("last", "best"):
        head += [f"{which}_step", f"{which}_overall_acc", f"{which}_mean_acc", f"{which}_macro_f1"]
        head += [f"{which}_recall_{c}" for c in classes]
    val = any(r["selected_on"] == "val" for r in rows)  # a validation split: where best was chosen, and its score
    head += ["selected_on", "last_val_mean_acc", "best_val_mean_acc"] if val else []
    dist = [k for k, _ in DISTRIBUTION_METRICS if k in ("vote_kl", "vote_nll") and recorded(rows, k)]
    head += [f"{which}_{k}" for which in ("last", "best") for k in dist]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(head)
        for r in rows:
            line = [r["arm"], r["method"], r["flags"], r["seed"], r["status"], r["total_steps"],
                    r["wall_s"] if r["wall_s"] is not None else "", r["code_version"], r["machine"]]
            for which in ("last", "best"):
                rec = r[which]
                line += [rec["step"], repr(rec["overall_acc"]), repr(rec["mean_acc"]), repr(rec["macro_f1"])]
                line += [repr(x) for x in rec["per_class_acc"]]
            if val:
                line += [r["selected_on"]] + [repr(r[w]["val_mean_acc"]) if "val_mean_acc" in r[w] else ""
                                              for w in ("last", "best")]
            line += [repr(r[w][k]) for w in ("last", "best") for k in dist]
            writer.writerow(line)
    os.replace(tmp, path)


def recorded(rows: list[dict], key: str) -> bool:
    """Whether every run's last and best evaluations hold ``key``."""
    return bool(rows) and all(key in r[w] for r in rows for w in ("last", "best"))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt(m: float, s: float | None, signed: bool = False) -> str:
    """Percent with two decimals (``signed``: a difference, so + on gains), ± the std if known."""
    return (f"{m * 100:+.2f}" if signed else f"{m * 100:.2f}") + (f" ± {s * 100:.2f}" if s is not None else "")


def nats(m: float, s: float | None) -> str:
    """A KL or NLL in nats with three decimals, ± the std if known."""
    return f"{m:.3f}" + (f" ± {s:.3f}" if s is not None else "")


def verdict(diffs: list[float], ce_std: float | None) -> str:
    """The noise rule stated in RESULTS.md. With few seeds a standard deviation can come out near
    zero by chance (two paired differences that happen to agree), so the paired one is floored by
    the baseline's own spread over its seeds."""
    m, s = mean_std(diffs)
    if len(diffs) >= 2 and ce_std is not None and ce_std > s:
        noise, basis = 2 * ce_std, "2 × std of baseline over seeds, larger than that of the paired diffs"
    elif len(diffs) >= 2:
        noise, basis = 2 * s, "2 × std of paired diffs"
    elif ce_std is not None:
        noise, basis = 2 * ce_std, "2 × std of baseline over seeds"
    else:
        return "noise unknown (1 seed)"
    digits = 2  # more where two decimals would print the difference and the threshold alike
    while digits < 6 and f"{abs(m) * 100:.{digits}f}" == f"{noise * 100:.{digits}f}":
        digits += 1
    if abs(m) < noise:
        return f"within seed noise (|{m * 100:.{digits}f}| < {noise * 100:.{digits}f} = {basis})"
    return (f"{'better' if m > 0 else 'worse'} beyond seed noise ({m * 100:+.{digits}f}, "
            f"noise {noise * 100:.{digits}f} = {basis})")


def write_markdown(path: Path, rows: list[dict], arms: list[Arm], args: argparse.Namespace) -> None:
    done = [r for r in rows if r["status"] == "done"]
    classes = next((r["classes"] for r in rows), [])
    by_arm = {a.name: [r for r in done if r["arm"] == a.name] for a in arms}
    selected_on = {r["selected_on"] for r in done} or {"test"}
    budget = f"--steps {args.steps}" if args.steps else f"--epochs {args.epochs}"
    best_text = {"test": "**best** = the evaluation with the highest mean class accuracy (selected on the evaluation "
                         "split, so optimistic)",
                 "val": "**best** = the evaluation with the highest mean class accuracy on the validation split "
                        "(held out from training: train.py's --val-fraction or --val-split official; best.pth), "
                        "its metrics on the evaluation split (nothing selected on it)"}
    lines = [
        "# Method comparison (bench/compare.py)",
        "",
        f"- Written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {machine_line()}.",
        f"- Dataset `{args.dataset}` at `{args.data_root or '(default root)'}`; budget `{budget}`; "
        f"common flags `{' '.join(shlex.quote(c) for c in shlex.split(args.common))}`.",
        "- Arms (method, extra flags, seeds): " + "; ".join(
            f"`{a.name}` = {a.method}{(' ' + a.flags_text) if a.flags else ''} [{','.join(map(str, a.seeds))}]"
            for a in arms) + ".",
        "- Metrics in % on the dataset's evaluation split: overall accuracy, mean class accuracy (mean of "
        "per-class recalls), macro-F1, per-class recall. **last** = the evaluation at the end of the budget "
        "(nothing selected on the evaluation split); "
        + "; for the runs with a validation split, ".join(best_text[k] for k in sorted(selected_on))
        + ".",
        f"- Mean ± sample standard deviation over the seeds that finished; paired differences are arm minus "
        f"`{args.baseline}` on the same seed.",
        f"- **Noise rule**: a difference in mean class accuracy (or overall) is *within seed noise* when "
        f"|mean of paired differences| < 2 × the larger of their standard deviation (≥ 2 paired seeds) and "
        f"the standard deviation of `{args.baseline}` across its seeds (a floor: with few seeds either can come "
        "out near zero by chance); with one paired seed, 2 × the latter; with neither, the noise is unknown "
        "and no claim is made.",
        "",
    ]
    machines: dict[str, list[str]] = {}
    for r in done:
        machines.setdefault(r["machine"] or "not recorded", []).append(f"{r['arm']} s{r['seed']}")
    if any(m != "not recorded" for m in machines):
        lines[-1:-1] = ["- Trained on: " + "; ".join(f"{m} ({', '.join(runs)})" for m, runs in machines.items()) + "."]
    missing = [f"{a.name} seed {s}" for a in arms for s in a.seeds
               if not any(r["arm"] == a.name and r["seed"] == s for r in done)]
    if missing:
        running = [f"{r['arm']} seed {r['seed']} (at step {r['last']['step']} of {r['total_steps']})"
                   for r in rows if r["status"] != "done"]
        lines += [f"**Not finished yet** ({len(missing)}): {', '.join(missing)}."
                  + (f" In progress: {', '.join(running)}." if running else ""), ""]
    best_title = {frozenset({"test"}): "Best evaluation (selected on the evaluation split)",
                  frozenset({"val"}): "At the validation-best evaluation (best.pth, chosen on the validation split)"}
    best_title = best_title.get(frozenset(selected_on), "Best evaluation (chosen on the validation split where a run "
                                                        "had one, else on the evaluation split)")
    for which, title in (("last", "Last evaluation"), ("best", best_title)):
        lines += summary_table(which, title, by_arm, arms, classes)
    lines += paired_table("last", "last evaluation", by_arm, arms, classes, args.baseline)
    if selected_on == {"val"}:  # chosen without looking at the evaluation split: as fair a comparison as the last
        lines += paired_table("best", "validation-best evaluation", by_arm, arms, classes, args.baseline)
    lines += trajectory_table(rows, arms)
    lines += ["Per-class columns use the first three letters of: " + ", ".join(classes) + ".", "",
              "Figures: `per_class_recall.png` (last evaluation, mean over seeds, bars ± std), "
              "`mean_acc_curves.png` (mean class accuracy at every evaluation, every arm and seed); every arm's "
              "own `curves.png` in its run folder. Raw numbers: `results.csv`.", ""]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def summary_table(which: str, title: str, by_arm: dict[str, list[dict]], arms: list[Arm], classes: list[str]) -> list[str]:
    """Mean ± std over seeds of every arm's ``which`` ("last" or "best") evaluation."""
    # The distribution metrics only where every run has the annotators' votes (FERPlus): ECE beside them.
    all_rows = [r for rs in by_arm.values() for r in rs]
    dist = [(k, name) for k, name in DISTRIBUTION_METRICS if recorded(all_rows, "vote_kl") and recorded(all_rows, k)]
    lines = [f"## {title}", "",
             "| arm | seeds | steps | overall | mean class acc | macro-F1 | " + " | ".join(c[:3] for c in classes) + " |"
             + "".join(f" {name} |" for _, name in dist),
             "|---|---:|---:|---:|---:|---:|" + "---:|" * (len(classes) + len(dist))]
    for arm in arms:
        rs = by_arm[arm.name]
        if not rs:
            continue
        cells = [fmt(*mean_std([r[which][k] for r in rs])) for k, _ in METRICS]
        recalls = [f"{mean_std([r[which]['per_class_acc'][i] for r in rs])[0] * 100:.1f}" for i in range(len(classes))]
        extra = [fmt(*mean_std([r[which][k] for r in rs])) if k == "ece" else nats(*mean_std([r[which][k] for r in rs]))
                 for k, _ in dist]
        steps = "/".join(sorted({str(r[which]["step"]) for r in rs}))
        lines.append(f"| {arm.name} | {len(rs)} | {steps} | " + " | ".join(cells) + " | " + " | ".join(recalls) + " |"
                     + "".join(f" {e} |" for e in extra))
    return lines + [""]


def paired_table(which: str, what: str, by_arm: dict[str, list[dict]], arms: list[Arm], classes: list[str],
                 baseline: str) -> list[str]:
    """Every arm minus ``baseline`` on the same seeds at their ``which`` evaluation, with the noise rule's verdicts."""
    base = by_arm.get(baseline, [])
    base_by_seed = {r["seed"]: r for r in base}
    lines = [f"## Paired difference to `{baseline}` ({what}, percentage points)", ""]
    if not base:
        return lines + [f"No finished `{baseline}` arm yet: no paired differences.", ""]
    ce_std = {k: mean_std([r[which][k] for r in base])[1] if len(base) >= 2 else None for k in ("overall_acc", "mean_acc")}
    lines += ["| arm | paired seeds | Δ overall | Δ mean class acc | Δ macro-F1 | " + " | ".join(f"Δ {c[:3]}" for c in classes)
              + " | mean class acc: verdict | overall: verdict |",
              "|---|---|---:|---:|---:|" + "---:|" * len(classes) + "---|---|"]
    for arm in arms:
        pairs = [(r, base_by_seed[r["seed"]]) for r in by_arm[arm.name] if r["seed"] in base_by_seed]
        if arm.name == baseline or not pairs:
            continue
        diff = {k: [a[which][k] - b[which][k] for a, b in pairs] for k, _ in METRICS}
        cells = [fmt(*mean_std(diff[k]), signed=True) for k, _ in METRICS]
        recalls = [f"{mean_std([a[which]['per_class_acc'][i] - b[which]['per_class_acc'][i] for a, b in pairs])[0] * 100:+.1f}"
                   for i in range(len(classes))]
        lines.append(f"| {arm.name} | {','.join(str(a['seed']) for a, _ in pairs)} | " + " | ".join(cells) + " | "
                     + " | ".join(recalls) + f" | {verdict(diff['mean_acc'], ce_std['mean_acc'])} | "
                     f"{verdict(diff['overall_acc'], ce_std['overall_acc'])} |")
    lines.append("")
    if len(base) >= 2:
        lines += [f"Seed noise of `{baseline}` itself ({len(base)} seeds): overall std "
                  f"{ce_std['overall_acc'] * 100:.2f}, mean class acc std {ce_std['mean_acc'] * 100:.2f}.", ""]
    return lines


def evaluation_columns(steps: list[int], limit: int = TRAJECTORY_COLUMNS) -> list[int]:
    """``steps`` (sorted), or ``limit`` of them evenly spaced, the first and the last included."""
    if len(steps) <= limit:
        return steps
    return [steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)]


def trajectory_table(rows: list[dict], arms: list[Arm]) -> list[str]:
    """Overall / mean class accuracy at every evaluation of every run, finished or not: whether an arm
    had levelled off by the end of the budget, in numbers (the curves figure shows the mean only)."""
    if not rows:
        return []
    all_steps = sorted({e["step"] for r in rows for e in r["evals"]})
    steps = evaluation_columns(all_steps)
    lines = ["## Every evaluation (overall / mean class acc, %)", ""]
    if len(steps) < len(all_steps):
        lines += [f"{len(steps)} of the {len(all_steps)} evaluation steps, evenly spaced.", ""]
    lines += ["| arm | seed | " + " | ".join(map(str, steps)) + " |", "|---|---:|" + "---:|" * len(steps)]
    for arm in arms:
        for r in sorted((r for r in rows if r["arm"] == arm.name), key=lambda r: r["seed"]):
            at = {e["step"]: e for e in r["evals"]}
            cells = [f"{at[s]['overall_acc'] * 100:.1f} / {at[s]['mean_acc'] * 100:.1f}" if s in at else "" for s in steps]
            label = arm.name + ("" if r["status"] == "done" else " (running)")
            lines.append(f"| {label} | {r['seed']} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_figures(out: Path, rows: list[dict], arms: list[Arm]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        return
    classes = rows[0]["classes"]
    done = [r for r in rows if r["status"] == "done"]
    shown = [a for a in arms if any(r["arm"] == a.name for r in done)]
    if shown:
        fig = Figure(figsize=(max(7.0, 1.2 * len(classes) + 0.25 * len(shown) * len(classes)), 4.2))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        width = 0.8 / len(shown)
        for j, arm in enumerate(shown):
            rs = [r for r in done if r["arm"] == arm.name]
            stats = [mean_std([r["last"]["per_class_acc"][i] for r in rs]) for i in range(len(classes))]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(classes))]
            ax.bar(xs, [m * 100 for m, _ in stats], width, yerr=[(s or 0) * 100 for _, s in stats],
                   label=f"{arm.name} (n={len(rs)})", color=f"C{j % 10}", capsize=2)
        ax.set_xticks(range(len(classes)), classes, rotation=20)
        ax.set(ylabel="recall (%)", title="Per-class recall, last evaluation (mean over seeds)", ylim=(0, 100))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        _save(fig, out / "per_class_recall.png")
    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for j, arm in enumerate(arms):
        for r in [r for r in rows if r["arm"] == arm.name]:
            k = arm.seeds.index(r["seed"]) if r["seed"] in arm.seeds else 0
            ax.plot([e["step"] for e in r["evals"]], [e["mean_acc"] * 100 for e in r["evals"]], styles[k % 4], color=f"C{j % 10}", marker=".",
                    label=f"{arm.name} s{r['seed']}" + ("" if r["status"] == "done" else " (running)"))
    ax.set(xlabel="step", ylabel="mean class accuracy (%)", title="Mean class accuracy on the evaluation split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, out / "mean_acc_curves.png")
    # Time to accuracy: test accuracy against the run's training wall clock (metrics.jsonl's "time",
    # seconds since that process started; a resumed run's clock restarts, marked "(resumed)").
    timed = [r for r in rows if all("time" in e for e in r["evals"])]
    if not timed:
        return
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for j, arm in enumerate(arms):
        for r in [r for r in timed if r["arm"] == arm.name]:
            minutes = [e["time"] / 60 for e in r["evals"]]
            resumed = any(b < a for a, b in zip(minutes, minutes[1:]))
            for ax, key in zip(axes, ("overall_acc", "mean_acc")):
                ax.plot(minutes, [e[key] * 100 for e in r["evals"]], color=f"C{j % 10}", marker=".",
                        label=f"{arm.name} s{r['seed']}" + (" (resumed)" if resumed else ""))
    for ax, what in zip(axes, ("overall accuracy", "mean class accuracy")):
        ax.set(xlabel="training wall clock (minutes)", ylabel=f"{what} (%)", title=f"Test {what} against time")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "time_to_accuracy.png")


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def write_report(out: Path, arms: list[Arm], args: argparse.Namespace) -> list[dict]:
    rows = collect(out, arms)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    write_markdown(out / "RESULTS.md", rows, arms, args)
    write_figures(out, rows, arms)
    try:
        from utils.plot import plot_curves
        for r in rows:
            plot_curves(out / r["arm"] / f"seed{r['seed']}")
    except ImportError:  # pragma: no cover
        pass
    return rows
