"""Model selection and the evaluation's lines: which evaluation is "best", and how it is reported.

With a validation split (``--val-fraction`` / ``--val-split official``) ``best.pth`` is the
evaluation with the highest *validation* mean class accuracy; the test split is evaluated at the
same steps and reported, never used for choosing. Without one, as the papers do, it is the
highest *test* mean class accuracy, labelled as such (optimistic). The first of equal scores wins.
"""
from __future__ import annotations

from typing import Any

METRIC_KEYS = ("overall_acc", "mean_acc", "per_class_acc", "macro_f1")
# Recorded where the evaluation computed them: calibration on every dataset, the distance to the
# annotators' vote distribution where the votes are known (FERPlus; utils/metrics.py).
DISTRIBUTION_KEYS = ("ece", "vote_kl", "vote_nll")


def _metric_items(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRIC_KEYS + DISTRIBUTION_KEYS if k in metrics}


def format_eval(metrics: dict, classes: list[str]) -> str:
    per_class = " ".join(f"{c[:4]}={a * 100:.1f}" for c, a in zip(classes, metrics["per_class_acc"]))
    votes = (f" | votes: KL {metrics['vote_kl']:.4f}  NLL {metrics['vote_nll']:.4f}  ECE {metrics['ece'] * 100:.2f}"
             if "vote_kl" in metrics else "")
    return (f"overall {metrics['overall_acc'] * 100:.2f}  mean {metrics['mean_acc'] * 100:.2f}  "
            f"macro-F1 {metrics['macro_f1'] * 100:.2f} | {per_class}{votes}")


class BestTracker:
    """The evaluation chosen so far, on ``selected_on`` ('val' or 'test'); saved in checkpoints."""

    def __init__(self, selected_on: str) -> None:
        self.selected_on = selected_on
        self.score = -1.0
        self.step: int | None = None
        self.test: dict | None = None  # the test metrics at the chosen step
        self.val: dict | None = None  # the validation metrics there (with a validation split)

    def update(self, step: int, test: dict, val: dict | None) -> bool:
        """Record an evaluation; True if it is the new best (``best.pth`` is to be written)."""
        score = (val if self.selected_on == "val" else test)["mean_acc"]
        if score <= self.score:
            return False
        self.score, self.step, self.test, self.val = score, step, test, val
        return True

    def summary(self) -> dict[str, Any] | None:
        """The ``best`` entry of a metrics.jsonl record: the chosen step and its test metrics."""
        if self.step is None:
            return None
        entry = {"step": self.step, "selected_on": self.selected_on, **_metric_items(self.test)}
        if self.val is not None:
            entry["val_mean_acc"] = self.val["mean_acc"]
        return entry

    def state_dict(self) -> dict:
        return {"selected_on": self.selected_on, "score": self.score, "step": self.step,
                "test": self.test, "val": self.val}

    def load_state_dict(self, state: dict | None, legacy_score: float = -1.0) -> None:
        """Restore; a checkpoint from before the tracker has only ``best_mean_acc`` (``legacy_score``)."""
        if not state:
            self.score = legacy_score
            return
        self.score, self.step, self.test, self.val = state["score"], state["step"], state["test"], state["val"]


def eval_record(progress, averages: dict, lr: float, test: dict, val: dict | None, networks: dict[str, dict],
                classes: list[str], best: BestTracker, elapsed: float,
                val_networks: dict[str, dict] | None = None) -> dict[str, Any]:
    """One metrics.jsonl record. The unprefixed accuracy keys are the test split's, as before the
    validation split existed; ``val_*`` the validation split's; ``best`` the chosen evaluation.
    ``networks`` are other networks' test metrics (``NAME_*``: Face2Exp's teacher, ``--ema``'s
    online model) and ``val_networks`` their validation metrics (``val_NAME_*``)."""
    record = {"epoch": progress.epoch, "step": progress.step, "loss": averages.get("loss", float("nan")),
              **{f"loss_{k}": v for k, v in averages.items() if k != "loss"},
              "lr": lr, "skipped_nonfinite": progress.skipped_nonfinite,
              "scaler_skipped": getattr(progress, "scaler_skipped", 0),
              **_metric_items(test),
              **{f"{name}_{k}": v for name, m in networks.items() for k, v in _metric_items(m).items()},
              "classes": classes, "time": round(elapsed, 1), "selected_on": best.selected_on}
    if val is not None:
        record.update({f"val_{k}": v for k, v in _metric_items(val).items()})
    for name, metrics in (val_networks or {}).items():
        record.update({f"val_{name}_{k}": v for k, v in _metric_items(metrics).items()})
    if best.summary() is not None:
        record["best"] = best.summary()
    return record


def eval_lines(progress, averages: dict, test: dict, val: dict | None, networks: dict[str, dict],
               classes: list[str], val_networks: dict[str, dict] | None = None) -> list[str]:
    """The log lines of one evaluation."""
    terms = " ".join(f"{k} {v:.4f}" for k, v in averages.items())
    head = f"epoch {progress.epoch} step {progress.step} | {terms} | "
    if val is None:
        lines = [head + format_eval(test, classes)]
    else:
        lines = [head + "val " + format_eval(val, classes), "  test: " + format_eval(test, classes)]
    lines += [f"  {name} val: {format_eval(m, classes)}" for name, m in (val_networks or {}).items()]
    return lines + [f"  {name}: {format_eval(m, classes)}" for name, m in networks.items()]


def summary_lines(last_step: int, last: dict | None, best: BestTracker, classes: list[str]) -> list[str]:
    """The end of the log: the last evaluation and the chosen one, labelled by what chose it."""
    if last is None or best.step is None:
        return []
    lines = [f"last evaluation (step {last_step}): {format_eval(last, classes)}"]
    if best.selected_on == "val":
        lines.append(f"test at the validation-chosen step (best.pth, step {best.step}, validation mean "
                     f"{best.score * 100:.2f}): {format_eval(best.test, classes)}")
    else:
        # Selected on the test split (RAF-DB has no validation split; the papers do the same), so
        # it is optimistic; comparisons use the last evaluation.
        lines.append(f"best evaluation, selected on the test split (step {best.step}): "
                     f"{format_eval(best.test, classes)}")
    return lines
