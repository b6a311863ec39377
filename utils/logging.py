"""Run output: the human log, metrics.jsonl (one JSON object per evaluation) and config.json.

Only the main rank writes; every method is a no-op elsewhere.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class RunLogger:
    def __init__(self, output_dir: str | Path, enabled: bool = True, resume: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.board = None  # a utils.tensorboard.RunBoard that mirrors each metrics record (--tensorboard)
        if enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            mode = "a" if resume else "w"
            self._log = open(self.output_dir / "log.txt", mode, encoding="utf-8", buffering=1)
            if not resume:
                (self.output_dir / "metrics.jsonl").write_text("", encoding="utf-8")

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        print(message, flush=True)
        self._log.write(message + "\n")

    def write_config(self, config: dict[str, Any]) -> None:
        if self.enabled:
            text = json.dumps(config, indent=2, sort_keys=True, default=str)
            (self.output_dir / "config.json").write_text(text + "\n", encoding="utf-8")

    def attach_board(self, board) -> None:
        self.board = board

    def write_metrics(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
            if self.board is not None:
                self.board.write_record(record)

    def truncate_metrics(self, after_step: int) -> None:
        """Keep only records up to ``after_step`` (a resumed run rewrites the later ones)."""
        path = self.output_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(path)

    def close(self) -> None:
        if self.enabled:
            self._log.close()
        if self.board is not None:
            self.board.close()
            self.board = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def prepare_output(args, main: bool) -> None:
    """Refuse to clobber a run: an output dir with a checkpoint or metrics needs --resume or --overwrite."""
    out = Path(args.output)
    if args.resume == "auto":
        args.resume = str(out / "last.pth") if (out / "last.pth").is_file() else None
    holds_run = (out / "last.pth").exists() or ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0)
    if holds_run and not args.resume and not args.overwrite:
        error_exit(f"--output {out} already holds a run; pass --resume auto to continue it or --overwrite to replace it")
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            error_exit(f"--output {out} is not writable: {exc.strerror or exc}")


def bad_images_line(log: Path) -> str:
    """The summary line of ``--skip-bad-images``: how many images were skipped, and where they are listed."""
    bad = sorted({line.split("\t")[0] for line in log.read_text().splitlines()}) if log.exists() else []
    return f"skipped {len(bad)} unreadable images" + (f" (listed in {log})" if bad else "")


def worker_error_message(exc: Exception) -> str:
    """The original message of an error re-raised from a DataLoader worker, without its traceback."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def error_exit(message: str, code: int = 2) -> None:
    """Print one clear error line and exit non-zero (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
