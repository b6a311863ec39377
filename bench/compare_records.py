"""What bench/compare.py keeps on disk besides the report: a run's folder (its evaluations, whether
it finished, the command it was started with, its wall time and the machine it trained on), the
pid files that say who trains a run or an OUTPUT, and the copy of finished runs in ``--records``."""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
from pathlib import Path
from typing import Callable

RECORD_FILES = ("command.json", "config.json", "metrics.jsonl", "done.json", "wall_time.json", "train.log")


def read_records(path: Path) -> list[dict]:
    """The evaluation records of an arm's metrics.jsonl (a half-written last line of a running arm is skipped)."""
    from utils.plot import read_records as read_metrics_records

    return [r for r in read_metrics_records(path) if "mean_acc" in r]


def finished_run(run_dir: Path) -> tuple[list[dict], dict] | None:
    """(evaluations, done.json) of a run that has finished, from its folder or its records; None otherwise."""
    done, metrics = run_dir / "done.json", run_dir / "metrics.jsonl"
    if not done.is_file() or not metrics.is_file():
        return None
    return read_records(metrics), json.loads(done.read_text())


def total_steps_of(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "config.json").read_text())["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_done(run_dir: Path) -> bool:
    if (run_dir / "done.json").is_file():
        return True
    total = total_steps_of(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    return bool(total and records and records[-1]["step"] >= total and (run_dir / "last.pth").is_file())


def same_command(recorded: dict, now: list[str], moved: dict[str, str | None]) -> bool:
    """Whether a run's recorded command.json is the command ``now``, once the folders it names are
    moved to where they are now (``moved``: data_root and output, the values the record holds under
    those keys): a run recorded on another machine may have had its data and output elsewhere."""
    before = recorded.get("argv")
    if before == now:
        return True
    if not isinstance(before, list):
        return False
    pairs = [(recorded[key], new) for key, new in moved.items()
             if new and isinstance(recorded.get(key), str) and recorded[key] != new]

    def move(token: str) -> str:
        for old, new in pairs:  # the folder itself or a path under it, alone or as --flag=PATH
            token = re.sub(rf"(^|=){re.escape(old)}(?=/|$)", lambda m, new=new: m.group(1) + new, token)
        return token

    return [move(t) for t in before] == now


def command_mismatch(run_dir: Path, now: list[str], moved: dict[str, str | None], label: str, advice: str) -> str | None:
    """Why ``run_dir``'s command.json (of run ``label``) is not the command ``now``, ending in
    ``advice``; None if it is, or if there is none: an arm's flags may not change between runs."""
    recorded = run_dir / "command.json"
    if not recorded.is_file():
        return None
    try:
        before = json.loads(recorded.read_text())
    except ValueError:
        before = None
    if not isinstance(before, dict):
        return f"{recorded} is not a command record (a JSON object with \"argv\"); delete that folder"
    if same_command(before, now, moved):
        return None
    return (f"{label}: {run_dir} was started with other flags ({shlex.join(before.get('argv') or [])}); "
            f"now {shlex.join(now)}. {advice}")


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running_pid(lock: Path, needle: str) -> int | None:
    """The pid in ``lock`` if that process is alive and its command line holds ``needle``."""
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid
    return pid if needle in cmdline else None


def copy_record(src: Path, dst: Path) -> None:
    """The small files of a finished run (``RECORD_FILES``), each replaced atomically; no checkpoints."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (src / name).is_file():
            tmp = dst / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, dst / name)


def read_timing(path: Path) -> dict:
    """done.json or wall_time.json as a dict with a numeric ``wall_s``; ValueError naming the file
    for anything else (a hand-edited or truncated record), so no caller reads a wrong time."""
    try:
        timing = json.loads(path.read_text())
        if not isinstance(timing, dict) or not isinstance(timing.get("wall_s"), (int, float)):
            raise ValueError('it has no numeric "wall_s"')
    except ValueError as exc:
        raise ValueError(f"{path}: not a wall-time record ({exc}); write {{\"wall_s\": SECONDS}} into it, "
                         "the seconds the run has trained so far, or delete it to count from 0") from None
    return timing


def wall_so_far(run_dir: Path) -> float:
    """Seconds of wall time the run's earlier training processes took (wall_time.json; 0 for a new run)."""
    timing = run_dir / "wall_time.json"
    return float(read_timing(timing)["wall_s"]) if timing.is_file() else 0.0


def write_wall(run_dir: Path, total: float) -> None:
    """wall_time.json := ``total``, replaced atomically (it is rewritten while the run trains)."""
    tmp = run_dir / f".wall_time.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"wall_s": round(total, 1)}) + "\n")
    os.replace(tmp, run_dir / "wall_time.json")


def finish_run(run_dir: Path, total: float, threads: int, finished: bool) -> None:
    """After a training process on ``run_dir``: the run's ``total`` wall time (every process on it) in
    wall_time.json and, when it ``finished``, done.json (wall time, total steps, the machine it trained on)."""
    write_wall(run_dir, total)
    if finished:
        (run_dir / "done.json").write_text(json.dumps({
            "wall_s": round(total, 1), "total_steps": total_steps_of(run_dir), "machine": machine_line(),
            "threads": threads}) + "\n")


def sync_records(out: Path, records: Path, runs: list[tuple[str, int, list[str]]], moved: dict[str, str | None],
                 say: Callable[[str], None]) -> None:
    """``--records``: restore into ``out`` every run (arm name, seed, today's command) finished in
    ``records`` but not in ``out`` (ValueError for a record of other flags), and copy every run
    finished in ``out`` but missing from ``records``."""
    for name, seed, now in runs:
        run_dir, kept = out / name / f"seed{seed}", records / name / f"seed{seed}"
        if (kept / "done.json").is_file() and not is_done(run_dir):
            problem = command_mismatch(kept, now, moved, f"{name} seed {seed}", "Use another --records, or delete that folder")
            if problem:
                raise ValueError(problem)
            copy_record(kept, run_dir)
            machine = json.loads((kept / "done.json").read_text()).get("machine") or "an unnamed machine"
            say(f"== {name} seed {seed}: restored from {kept} (finished on {machine})")
        elif is_done(run_dir) and not (kept / "done.json").is_file():
            copy_record(run_dir, kept)
            say(f"== {name} seed {seed}: recorded in {kept}")


def machine_line(cpuinfo: str | None = None) -> str:
    """The CPU (model name, and x86 family/model: one name can cover several generations), whether
    it has native bf16, the core count and torch: what a run's wall time and float rounding depend on."""
    from utils.device import cpu_has_native_bf16, cpu_name

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = cpu_name(cpuinfo)
    if fields.get("cpu family") and fields.get("model"):
        model += f" (family {fields['cpu family']} model {fields['model']})"
    if cpuinfo:
        model += ", native bf16" if cpu_has_native_bf16(cpuinfo) else ", no native bf16"
    try:
        import torch
        tv = torch.__version__
    except ImportError:  # pragma: no cover
        tv = "?"
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, torch {tv}"
