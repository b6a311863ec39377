"""TensorBoard event files for a training run (``--tensorboard``; on by default when the
``tensorboard`` package is installed). Written by rank 0 only, into ``OUTPUT/tensorboard/``:

- ``train/<term>`` and ``train/lr``: the mean of each loss term over the last ``--log-interval``
  steps (fewer at an epoch's start), and the learning rate of that step;
- every evaluation metric of ``metrics.jsonl``, under ``<split>/<metric>`` where split is ``test``,
  ``val``, or ``test_<network>`` / ``val_<network>`` for a method's other networks (``--ema``'s
  ``online`` model, Face2Exp's ``teacher``); per-class recall as ``<split>/recall/<class>``; the
  loss terms averaged over the epoch so far as ``epoch/<term>``;
- ``test/confusion_matrix``: the row-normalised test confusion matrix as an image.

A resumed run opens its writer with ``purge_step`` = the resumed step + 1: TensorBoard's reader
then drops the events of the steps the run redoes, so the curves continue without duplicates
(as ``metrics.jsonl`` is truncated). ``python -m tensorboard.main --logdir OUTPUT/tensorboard``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from utils.evaluation import DISTRIBUTION_KEYS, METRIC_KEYS

BOARD_DIR = "tensorboard"
_METRICS = sorted(METRIC_KEYS + DISTRIBUTION_KEYS, key=len, reverse=True)  # longest suffix first
_NOT_METRICS = {"epoch", "step", "lr", "time", "classes", "selected_on", "skipped_nonfinite", "best"}


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record -> {TensorBoard tag: value} for its loss averages and evaluation metrics."""
    classes = record.get("classes") or []
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in _NOT_METRICS:
            continue
        if key == "loss" or key.startswith("loss_"):
            scalars[f"epoch/{key}"] = float(value)
            continue
        split, rest = ("val", key[4:]) if key.startswith("val_") else ("test", key)
        metric = next((m for m in _METRICS if rest == m or rest.endswith("_" + m)), None)
        if metric is None:
            continue
        network = rest[: -len(metric) - 1] if rest != metric else ""
        prefix = f"{split}_{network}" if network else split
        if metric == "per_class_acc":
            for name, recall in zip(classes, value):
                scalars[f"{prefix}/recall/{name}"] = float(recall)
        else:
            scalars[f"{prefix}/{metric}"] = float(value)
    return scalars


class RunBoard:
    """The run's TensorBoard writer and the hooks that feed it."""

    def __init__(self, output_dir: str | Path, log_interval: int, classes: list[str], resume_step: int | None,
                 progress) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_interval, self.classes = log_interval, classes
        self.directory = Path(output_dir) / BOARD_DIR
        # purge_step: the reader forgets what earlier processes wrote at the steps this one redoes.
        self.writer = SummaryWriter(str(self.directory), purge_step=None if resume_step is None else resume_step + 1)
        self._sums, self._batches = self._window_start(progress)

    @staticmethod
    def _window_start(progress) -> tuple[dict[str, float], int]:
        progress.averages()  # moves the pending device sums to the host
        return dict(progress.sums), progress.batches

    def on_step(self, progress) -> None:
        """After a training step: every ``log_interval`` steps, the loss terms' mean since the last log and the lr."""
        if not self.log_interval or progress.step % self.log_interval:
            return
        progress.averages()
        if progress.batches < self._batches:  # a new epoch reset the sums: the window starts there
            self._sums, self._batches = {}, 0
        count = progress.batches - self._batches
        if count > 0:
            for name, total in progress.sums.items():
                self.writer.add_scalar(f"train/{name}", (total - self._sums.get(name, 0.0)) / count, progress.step)
        self.writer.add_scalar("train/lr", progress.lr, progress.step)
        self._sums, self._batches = dict(progress.sums), progress.batches

    def chain(self, hooks: Callable) -> Callable:
        """The step hook that logs, then runs the run's own hooks (evaluation, saving, stop)."""
        def on_step(progress) -> None:
            self.on_step(progress)
            hooks(progress)
        return on_step

    def write_record(self, record: dict[str, Any]) -> None:
        """One evaluation's metrics.jsonl record, at its step (flushed: the curves are live)."""
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def write_confusion(self, step: int, matrix: list[list[int]], tag: str = "test/confusion_matrix") -> None:
        self.writer.add_image(tag, confusion_image(matrix, self.classes), step, dataformats="HWC")
        self.writer.flush()

    def wrap_evaluator(self, evaluate):
        """The run's evaluator, also drawing its test confusion matrix."""
        return _BoardEvaluator(evaluate, self)

    def close(self) -> None:
        self.writer.close()


class _BoardEvaluator:
    """Calls the run's evaluator and logs the confusion matrix of the test metrics it returns;
    every other attribute (``last``) is the evaluator's."""

    def __init__(self, evaluate, board: RunBoard) -> None:
        self._evaluate, self._board = evaluate, board

    def __call__(self, progress):
        test = self._evaluate(progress)
        if isinstance(test, dict) and "confusion_matrix" in test:
            self._board.write_confusion(progress.step, test["confusion_matrix"])
        return test

    def __getattr__(self, name: str):
        return getattr(self._evaluate, name)


CELL = 44  # pixels per confusion-matrix cell, at least (wider when a class name needs it)
BLUE = (8, 48, 107)  # a recall of 100%; 0% is white


def confusion_image(matrix: list[list[int]], classes: list[str]):
    """The row-normalised confusion matrix (recall on the diagonal) as an RGB array (H, W, 3),
    drawn with Pillow: a matplotlib figure per evaluation cost about 0.4 s, this a few milliseconds."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    counts = np.asarray(matrix, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    font = ImageFont.load_default(size=11)
    left = max(int(font.getlength(c)) for c in classes) + 14
    cell, top = max(CELL, left - 6), 30
    image = Image.new("RGB", (left + k * cell + 4, top + k * cell + 18), "white")
    draw = ImageDraw.Draw(image)
    for i in range(k):
        draw.text((4, top + i * cell + cell // 2), classes[i], fill="black", font=font, anchor="lm")
        draw.text((left + i * cell + cell // 2, top - 4), classes[i], fill="black", font=font, anchor="md")
        for j in range(k):
            value = rows[i, j]
            shade = tuple(round(255 - value * (255 - c)) for c in BLUE)
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=shade)
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), f"{value:.0%}",
                      fill="white" if value > 0.5 else "black", font=font, anchor="mm")
    draw.text((left, top + k * cell + 4), "rows: true class, columns: predicted", fill="black", font=font)
    return np.asarray(image)


def add_tensorboard_arg(group) -> None:
    """train.py's ``--tensorboard`` / ``--no-tensorboard`` flag."""
    import argparse

    group.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                       help="write TensorBoard events to OUTPUT/tensorboard (rank 0; utils/tensorboard.py); default: "
                            "on when the tensorboard package is installed")


def open_board(args, progress, logger, classes: list[str], is_main: bool) -> RunBoard | None:
    """The run's board when ``--tensorboard`` is on (default: when the package is installed) on rank 0;
    attached to ``logger`` so each metrics.jsonl record is also written as scalars."""
    enabled = available() if args.tensorboard is None else args.tensorboard
    if not enabled or not is_main:
        return None
    if not available():
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
    board = RunBoard(args.output, args.log_interval, classes, progress.step if args.resume else None, progress)
    logger.attach_board(board)
    logger.info(f"TensorBoard: {board.directory} (python -m tensorboard.main --logdir {board.directory})"
                + (f"; steps after {progress.step} purged from the earlier events" if args.resume else ""))
    return board
