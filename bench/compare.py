"""Every method side by side: same data, same budget, several seeds, one command.

    python bench/compare.py --dataset folder --data-root ../shared/data/fer2013 \
        --methods ce,mek,eac,focal --seeds 0 --arm-seeds ce=0,1 --arm-seeds mek=0,1 \
        --steps 1344 --common "--backbone resnet18 --img-size 112 --batch-size 64" --output runs/cmp

Arms. ``--methods`` is a comma-separated list; each item is a registered method name
(``ce``, ``mek``, ...) optionally followed by ``:`` and extra train.py flags written with ``=``
and separated by spaces, e.g. ``mek:--class-weight-power=0.5 --rac-weight=0.03`` (its arm name
is derived from the flags: ``mek_class-weight-power=0.5_rac-weight=0.03``). For anything
else (commas in a value, a name of your own) use ``--arm NAME="--method mek --rsl-eps 0.1"``
(repeatable). The arm called ``ce`` (``--baseline``) is the reference of the paired differences.

Budget. ``--steps N`` or ``--epochs N`` and ``--common "<train.py flags>"`` (backbone, image
size, batch, lr, ...) go to every arm unchanged; ``--dataset``, ``--data-root``, ``--seed``,
``--output``, ``--steps``, ``--epochs``, ``--resume`` and ``--overwrite`` are set by this
script and refused in ``--common`` and in an arm's flags. Seeds: ``--seeds 0,1`` for every arm,
``--arm-seeds NAME=0,1,2`` (repeatable) for one arm. Order: every seed of the baseline arm first
(the noise rule needs its spread, so each later arm gets its verdict as soon as it finishes), then
the first seed of every other arm, then the second, ...; ``--run-last NAME,NAME`` moves those arms
(the expensive ones) after the others.

Each arm and seed trains in ``OUTPUT/<arm>/seed<S>/`` (train.py's output there, its stdout and
stderr in ``train.log``) as a ``train.py`` subprocess, ``--lanes N`` at a time (default 1), with
the CPU's cores divided between the lanes (``OMP_NUM_THREADS``; ``--threads`` overrides) and at
``--nice`` priority. Resumable: an arm is done when ``done.json`` is there or its metrics.jsonl
holds an evaluation at its total step count and last.pth exists (skipped); an arm that was
stopped resumes with ``--resume auto``; rerunning the same command continues where it stopped.
A second compare.py on the same OUTPUT is refused while the first runs; an arm's flags may not
change between runs (the recorded command must match, up to a moved ``--data-root`` or OUTPUT).

Records. ``--records DIR`` (a folder in the repository, to commit) keeps a copy of every finished
run's small files (command.json, config.json, metrics.jsonl, done.json, wall_time.json, train.log;
no checkpoints): each run is copied there when it finishes, and a run finished there but not in
OUTPUT is restored into OUTPUT and skipped. A comparison that outlives one machine (OUTPUT lives
outside the work tree) then loses no finished run: a fresh machine trains only what the records
lack. done.json names the machine each run trained on (CPU model, family/model, native bf16,
threads), and RESULTS.md and results.csv say which run trained where.

To pause: the same command with ``--stop`` added (or SIGTERM/Ctrl-C to compare.py) stops the
running arms at their next step with a checkpoint of that step; the same command again resumes
them.

After each arm, and at the end, writes to OUTPUT (``--report-only`` just rewrites them):
``results.csv`` (a row per arm and seed: last_ and best_ evaluation metrics as fractions, best =
highest mean class accuracy on the evaluation split, optimistic), ``RESULTS.md`` (mean and std
over seeds, paired differences to the baseline with a stated noise rule, every run's overall / mean
class accuracy at every evaluation, up to 12 of them), ``per_class_recall.png``
and ``mean_acc_curves.png``. Bad input: one ``error:`` line, exit 2. A failed arm: exit 1 at the
end, with the other arms run and reported.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESERVED = ("--dataset", "--data-root", "--seed", "--output", "--steps", "--epochs", "--resume", "--overwrite")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
METRICS = (("overall_acc", "overall"), ("mean_acc", "mean class acc"), ("macro_f1", "macro-F1"))
RECORD_FILES = ("command.json", "config.json", "metrics.jsonl", "done.json", "wall_time.json", "train.log")
TRAJECTORY_COLUMNS = 12  # evaluation steps in RESULTS.md's trajectory table: a wider one does not read


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# ----------------------------------------------------------------------------- arms


@dataclass
class Arm:
    name: str
    method: str
    flags: list[str]          # the arm's own train.py flags (besides --method)
    seeds: list[int] = field(default_factory=list)

    @property
    def flags_text(self) -> str:
        return " ".join(shlex.quote(f) for f in self.flags)


def parse_seeds(text: str, what: str = "--seeds") -> list[int]:
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not re.fullmatch(r"\d+", s) for s in items):
        fail(f"{what} {text!r} is not a comma-separated list of non-negative integers (e.g. 0,1,2)")
    seeds = [int(s) for s in items]
    if len(set(seeds)) != len(seeds):
        fail(f"{what} {text!r} repeats a seed")
    return seeds


def _slug(method: str, flags: list[str]) -> str:
    parts = [method] + [re.sub(r"[^A-Za-z0-9._=+-]", "_", f.lstrip("-")) for f in flags]
    return "_".join(p for p in parts if p)


def parse_arms(methods_text: str | None, arm_specs: list[str]) -> list[Arm]:
    arms: list[Arm] = []
    for item in [s.strip() for s in (methods_text or "").split(",") if s.strip()]:
        method, _, extra = item.partition(":")
        flags = shlex.split(extra)
        arms.append(Arm(_slug(method.strip(), flags) if flags else method.strip(), method.strip(), flags))
    for spec in arm_specs:
        name, eq, text = spec.partition("=")
        if not eq or not name.strip():
            fail(f"--arm {spec!r} is not NAME=\"--method M [flags]\"")
        tokens = shlex.split(text)
        method = "mek"
        rest: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok == "--method" and i + 1 < len(tokens):
                method, i = tokens[i + 1], i + 2
                continue
            if tok.startswith("--method="):
                method = tok.split("=", 1)[1]
            else:
                rest.append(tok)
            i += 1
        if "--method" not in " ".join(tokens):
            fail(f"--arm {name}: name its method (\"--method M ...\")")
        arms.append(Arm(name.strip(), method, rest))
    if not arms:
        fail("no arms: pass --methods ce,mek,... and/or --arm NAME=\"--method M ...\"")
    seen = set()
    for arm in arms:
        if not NAME_RE.match(arm.name):
            fail(f"arm name {arm.name!r} has characters outside [A-Za-z0-9._=+-]")
        if arm.name in seen:
            fail(f"arm {arm.name!r} is given twice")
        seen.add(arm.name)
    return arms


def reserved_flag(tokens: list[str]) -> str | None:
    for tok in tokens:
        if tok.split("=", 1)[0] in RESERVED:
            return tok.split("=", 1)[0]
    return None


def check_arm_flags(arm: Arm, common: list[str], dataset: str) -> None:
    """Refuse an unknown method, a flag of another method or a flag train.py does not know."""
    import methods
    import train

    if arm.method not in methods.METHODS:
        fail(f"arm {arm.name}: method {arm.method!r} is unknown; choose from {', '.join(sorted(methods.METHODS))}")
    bad = reserved_flag(arm.flags)
    if bad:
        fail(f"arm {arm.name}: {bad} is set by compare.py for every arm (use its own flags)")
    argv = ["--method", arm.method, "--dataset", dataset, *common, *arm.flags]
    try:
        methods.check_foreign_flags(argv, arm.method)
    except ValueError as exc:
        fail(f"arm {arm.name}: {exc}")
    parser = train.get_args_parser(arm.method)

    def _error(message: str) -> None:
        fail(f"arm {arm.name}: train.py would refuse its flags: {message}")

    parser.error = _error  # type: ignore[method-assign]
    parser.parse_args(argv)


# ----------------------------------------------------------------------------- run state


def read_records(path: Path) -> list[dict]:
    """The evaluation records of an arm's metrics.jsonl (a half-written last line of a running arm is skipped)."""
    from utils.plot import read_records as read_metrics_records

    return [r for r in read_metrics_records(path) if "mean_acc" in r]


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


def copy_record(src: Path, dst: Path) -> None:
    """The small files of a finished run (``RECORD_FILES``), each replaced atomically; no checkpoints."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (src / name).is_file():
            tmp = dst / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, dst / name)


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


def stop_running(out: Path, wait_s: float) -> int:
    """``--stop``: SIGTERM to the compare.py running on ``out``, then wait for it to exit. Its running
    arms save the step in flight (train.py's graceful stop); the same command resumes them."""
    pid = running_pid(out / "compare.pid", "compare.py")
    if pid is None:
        print(f"no compare.py is running on {out}; nothing to stop", flush=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    print(f"compare.py (pid {pid}) on {out}: sent SIGTERM; waiting for its running arm(s) to save their step",
          flush=True)
    deadline = time.monotonic() + wait_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"error: compare.py (pid {pid}) is still running after {wait_s:.0f} s; wait longer, or send "
                  f"SIGTERM again to stop at once (kill {pid}; that loses the steps since each arm's last.pth)",
                  file=sys.stderr, flush=True)
            return 1
        time.sleep(0.5)
    print("stopped; rerun the same command to resume", flush=True)
    return 0


# ----------------------------------------------------------------------------- running


class Runner:
    def __init__(self, args: argparse.Namespace, arms: list[Arm], common: list[str]) -> None:
        self.args, self.arms, self.common = args, arms, common
        self.out = Path(args.output)
        self.records = Path(args.records) if args.records else None
        self.lock = threading.Lock()
        self.children: dict[int, subprocess.Popen] = {}
        self.failed: list[str] = []
        self.stopping = False
        cores = os.cpu_count() or 1
        self.threads = args.threads or max(1, cores // args.lanes)
        self.popen = subprocess.Popen

    def command(self, arm: Arm, seed: int) -> list[str]:
        budget = ["--steps", str(self.args.steps)] if self.args.steps else ["--epochs", str(self.args.epochs)]
        cmd = [self.args.python, str(REPO / "train.py"), "--method", arm.method, "--dataset", self.args.dataset]
        if self.args.data_root:
            cmd += ["--data-root", self.args.data_root]
        return cmd + budget + self.common + arm.flags + ["--seed", str(seed)]

    def run_arm(self, arm: Arm, seed: int) -> None:
        run_dir = self.out / arm.name / f"seed{seed}"
        label = f"{arm.name} seed {seed}"
        cmd = self.command(arm, seed)
        recorded = run_dir / "command.json"
        if is_done(run_dir):
            self.say(f"== {label}: done, skipped")
            return
        pid = running_pid(run_dir / "train.pid", "train.py")
        if pid:
            self.say(f"== {label}: being trained by pid {pid} (another process), skipped")
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps({"argv": cmd[2:], "data_root": self.args.data_root,
                                        "output": str(self.out)}, indent=1) + "\n")
        resume = (run_dir / "last.pth").is_file()
        full = cmd + ["--output", str(run_dir)] + (["--resume", "auto"] if resume else ["--overwrite"])
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        self.say(f"== {label}: {'resuming' if resume else 'starting'} ({self.threads} threads) "
                 f"{_dt.datetime.now().strftime('%H:%M:%S')}; log {run_dir / 'train.log'}")
        start = time.time()
        nice = self.args.nice
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write(f"\n# {_dt.datetime.now().isoformat(timespec='seconds')} {shlex.join(full)}\n")
            log.flush()
            with self.lock:
                if self.stopping:
                    return
                prefix = ["nice", "-n", str(nice)] if nice else []  # nice execs train.py: same pid
                proc = self.popen(prefix + full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env)
                self.children[proc.pid] = proc
            (run_dir / "train.pid").write_text(f"{proc.pid}\n")
            rc = proc.wait()
            with self.lock:
                self.children.pop(proc.pid, None)
        wall = time.time() - start
        timing = run_dir / "wall_time.json"
        previous = json.loads(timing.read_text()).get("wall_s", 0.0) if timing.is_file() else 0.0
        timing.write_text(json.dumps({"wall_s": round(previous + wall, 1)}) + "\n")
        (run_dir / "train.pid").unlink(missing_ok=True)
        if rc == 0 and is_done(run_dir):
            (run_dir / "done.json").write_text(json.dumps({
                "wall_s": round(previous + wall, 1), "total_steps": total_steps_of(run_dir),
                "machine": machine_line(), "threads": self.threads}) + "\n")
            if self.records:
                copy_record(run_dir, self.records / arm.name / f"seed{seed}")
            rec = read_records(run_dir / "metrics.jsonl")[-1]
            self.say(f"== {label}: done in {wall:.0f}s: overall {rec['overall_acc'] * 100:.2f} "
                     f"mean {rec['mean_acc'] * 100:.2f} macro-F1 {rec['macro_f1'] * 100:.2f}")
        elif not self.stopping:
            tail = (run_dir / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
            self.say(f"== {label}: FAILED (exit {rc}) after {wall:.0f}s; see {run_dir / 'train.log'}: "
                     f"{tail[0] if tail else ''}")
            with self.lock:
                self.failed.append(label)
        with self.lock:
            try:
                write_report(self.out, self.arms, self.args)
            except Exception as exc:  # noqa: BLE001 -- a report problem must not stop the other arms
                self.say(f"warning: could not write the report: {type(exc).__name__}: {exc}")

    def say(self, message: str) -> None:
        print(message, flush=True)

    def stop(self, signum, frame) -> None:  # noqa: ARG002
        with self.lock:
            self.stopping = True
            for proc in self.children.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # train.py ends its step, saves last.pth there and exits
        self.say(f"compare.py: signal {signum}; stopping the running arm(s); rerun the same command to resume")

    def moved(self) -> dict[str, str | None]:
        return {"data_root": self.args.data_root, "output": str(self.out)}

    def check_recorded(self, arm: Arm, seed: int, run_dir: Path, advice: str) -> None:
        """An arm's flags may not change between runs: its command.json must be today's command."""
        recorded = run_dir / "command.json"
        if not recorded.is_file():
            return
        try:
            before = json.loads(recorded.read_text())
        except ValueError:
            before = None
        if not isinstance(before, dict):
            fail(f"{recorded} is not a command record (a JSON object with \"argv\"); delete that folder")
        now = self.command(arm, seed)[2:]
        if not same_command(before, now, self.moved()):
            fail(f"{arm.name} seed {seed}: {run_dir} was started with other flags "
                 f"({shlex.join(before.get('argv') or [])}); now {shlex.join(now)}. {advice}")

    def sync_records(self) -> None:
        """--records: restore into OUTPUT every run finished in the records but not here (checked
        against today's flags), and copy every run finished here but missing from the records."""
        if not self.records:
            return
        for arm in self.arms:
            for seed in arm.seeds:
                run_dir, kept = self.out / arm.name / f"seed{seed}", self.records / arm.name / f"seed{seed}"
                if (kept / "done.json").is_file() and not is_done(run_dir):
                    self.check_recorded(arm, seed, kept, "Use another --records, or delete that folder")
                    copy_record(kept, run_dir)
                    machine = json.loads((kept / "done.json").read_text()).get("machine") or "an unnamed machine"
                    self.say(f"== {arm.name} seed {seed}: restored from {kept} (finished on {machine})")
                elif is_done(run_dir) and not (kept / "done.json").is_file():
                    copy_record(run_dir, kept)
                    self.say(f"== {arm.name} seed {seed}: recorded in {kept}")

    def run(self) -> None:
        jobs = job_order(self.arms, self.args.run_last, self.args.baseline)
        self.sync_records()
        for arm, seed in jobs:  # before anything runs: an arm's flags may not change between runs
            self.check_recorded(arm, seed, self.out / arm.name / f"seed{seed}",
                                "Use another --output, or delete that folder")
        pending = list(jobs)
        queue_lock = threading.Lock()

        def lane() -> None:
            while not self.stopping:
                with queue_lock:
                    if not pending:
                        return
                    arm, seed = pending.pop(0)
                self.run_arm(arm, seed)

        workers = [threading.Thread(target=lane, daemon=True) for _ in range(self.args.lanes)]
        for w in workers:
            w.start()
        for w in workers:
            while w.is_alive():
                w.join(0.5)


def job_order(arms: list[Arm], run_last: list[str], baseline: str | None = None) -> list[tuple[Arm, int]]:
    """(arm, seed) in training order: every seed of the ``baseline`` arm first (the noise rule needs
    its spread over seeds, so each later arm gets a verdict as soon as it finishes), then the first
    seed of every other arm, then the second, ...; the arms named in ``run_last`` (the expensive
    ones) come after all the others, in the same order."""
    def rounds(group: list[Arm]) -> list[tuple[Arm, int]]:
        depth = max((len(a.seeds) for a in group), default=0)
        return [(arm, arm.seeds[i]) for i in range(depth) for arm in group if i < len(arm.seeds)]

    first = [(a, seed) for a in arms if a.name == baseline and a.name not in run_last for seed in a.seeds]
    rest = [a for a in arms if a.name != baseline or a.name in run_last]
    return first + rounds([a for a in rest if a.name not in run_last]) + rounds([a for a in rest if a.name in run_last])


# ----------------------------------------------------------------------------- report


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
            best = max(records, key=lambda r: r["mean_acc"])  # first of ties, as train.py's best.pth
            wall, machine = None, ""
            for name in ("done.json", "wall_time.json"):
                if (run_dir / name).is_file():
                    timing = json.loads((run_dir / name).read_text())
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
                         "last": last, "best": best, "curve": [(r["step"], r["mean_acc"]) for r in records],
                         "overall_curve": [(r["step"], r["overall_acc"]) for r in records]})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    classes = next((r["classes"] for r in rows), [])
    head = ["arm", "method", "flags", "seed", "status", "total_steps", "wall_s", "code_version", "machine"]
    for which in ("last", "best"):
        head += [f"{which}_step", f"{which}_overall_acc", f"{which}_mean_acc", f"{which}_macro_f1"]
        head += [f"{which}_recall_{c}" for c in classes]
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
            writer.writerow(line)
    os.replace(tmp, path)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt(m: float, s: float | None, signed: bool = False) -> str:
    """Percent with two decimals (``signed``: a difference, so + on gains), ± the std if known."""
    return (f"{m * 100:+.2f}" if signed else f"{m * 100:.2f}") + (f" ± {s * 100:.2f}" if s is not None else "")


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


def write_markdown(path: Path, rows: list[dict], arms: list[Arm], args: argparse.Namespace) -> None:
    done = [r for r in rows if r["status"] == "done"]
    classes = next((r["classes"] for r in rows), [])
    by_arm = {a.name: [r for r in done if r["arm"] == a.name] for a in arms}
    base = by_arm.get(args.baseline, [])
    base_by_seed = {r["seed"]: r for r in base}
    budget = f"--steps {args.steps}" if args.steps else f"--epochs {args.epochs}"
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
        "(nothing selected on the evaluation split); **best** = the evaluation with the highest mean class "
        "accuracy (selected on the evaluation split, so optimistic).",
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
    short = [c[:3] for c in classes]
    for which, title in (("last", "Last evaluation"), ("best", "Best evaluation (selected on the evaluation split)")):
        lines += [f"## {title}", "",
                  "| arm | seeds | steps | overall | mean class acc | macro-F1 | " + " | ".join(short) + " |",
                  "|---|---:|---:|---:|---:|---:|" + "---:|" * len(short)]
        for arm in arms:
            rs = by_arm[arm.name]
            if not rs:
                continue
            cells = [fmt(*mean_std([r[which][k] for r in rs])) for k, _ in METRICS]
            recalls = [f"{mean_std([r[which]['per_class_acc'][i] for r in rs])[0] * 100:.1f}" for i in range(len(classes))]
            steps = "/".join(sorted({str(r[which]["step"]) for r in rs}))
            lines.append(f"| {arm.name} | {len(rs)} | {steps} | " + " | ".join(cells) + " | " + " | ".join(recalls) + " |")
        lines.append("")
    ce_std = {k: mean_std([r["last"][k] for r in base])[1] if len(base) >= 2 else None for k in ("overall_acc", "mean_acc")}
    lines += [f"## Paired difference to `{args.baseline}` (last evaluation, percentage points)", ""]
    if not base:
        lines += [f"No finished `{args.baseline}` arm yet: no paired differences.", ""]
    else:
        lines += ["| arm | paired seeds | Δ overall | Δ mean class acc | Δ macro-F1 | " + " | ".join(f"Δ {s}" for s in short)
                  + " | mean class acc: verdict | overall: verdict |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(short) + "---|---|"]
        for arm in arms:
            if arm.name == args.baseline:
                continue
            pairs = [(r, base_by_seed[r["seed"]]) for r in by_arm[arm.name] if r["seed"] in base_by_seed]
            if not pairs:
                continue
            diff = {k: [a["last"][k] - b["last"][k] for a, b in pairs] for k, _ in METRICS}
            cells = [fmt(*mean_std(diff[k]), signed=True) for k, _ in METRICS]
            recalls = [f"{mean_std([a['last']['per_class_acc'][i] - b['last']['per_class_acc'][i] for a, b in pairs])[0] * 100:+.1f}"
                       for i in range(len(classes))]
            lines.append(f"| {arm.name} | {','.join(str(a['seed']) for a, _ in pairs)} | " + " | ".join(cells) + " | "
                         + " | ".join(recalls) + f" | {verdict(diff['mean_acc'], ce_std['mean_acc'])} | "
                         f"{verdict(diff['overall_acc'], ce_std['overall_acc'])} |")
        lines.append("")
        if len(base) >= 2:
            lines += [f"Seed noise of `{args.baseline}` itself ({len(base)} seeds): overall std "
                      f"{ce_std['overall_acc'] * 100:.2f}, mean class acc std {ce_std['mean_acc'] * 100:.2f}.", ""]
    lines += trajectory_table(rows, arms)
    lines += ["Per-class columns use the first three letters of: " + ", ".join(classes) + ".", "",
              "Figures: `per_class_recall.png` (last evaluation, mean over seeds, bars ± std), "
              "`mean_acc_curves.png` (mean class accuracy at every evaluation, every arm and seed); every arm's "
              "own `curves.png` in its run folder. Raw numbers: `results.csv`.", ""]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)


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
    all_steps = sorted({step for r in rows for step, _ in r["curve"]})
    steps = evaluation_columns(all_steps)
    lines = ["## Every evaluation (overall / mean class acc, %)", ""]
    if len(steps) < len(all_steps):
        lines += [f"{len(steps)} of the {len(all_steps)} evaluation steps, evenly spaced.", ""]
    lines += ["| arm | seed | " + " | ".join(map(str, steps)) + " |", "|---|---:|" + "---:|" * len(steps)]
    for arm in arms:
        for r in sorted((r for r in rows if r["arm"] == arm.name), key=lambda r: r["seed"]):
            mean, overall = dict(r["curve"]), dict(r["overall_curve"])
            cells = [f"{overall[s] * 100:.1f} / {mean[s] * 100:.1f}" if s in mean else "" for s in steps]
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
            xs, ys = zip(*r["curve"])
            ax.plot(xs, [y * 100 for y in ys], styles[k % 4], color=f"C{j % 10}", marker=".",
                    label=f"{arm.name} s{r['seed']}" + ("" if r["status"] == "done" else " (running)"))
    ax.set(xlabel="step", ylabel="mean class accuracy (%)", title="Mean class accuracy on the evaluation split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, out / "mean_acc_curves.png")


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


# ----------------------------------------------------------------------------- CLI


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("bench/compare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset", required=True, help="a registered dataset: raf-db, folder, ferplus, affectnet, demo, ...")
    p.add_argument("--data-root", default=None, help="dataset root (default: the dataset's default root)")
    p.add_argument("--methods", default=None, help="comma-separated arms: METHOD or METHOD:--flag=value --flag2=value")
    p.add_argument("--arm", action="append", default=[], metavar='NAME="--method M FLAGS"', help="a named arm (repeatable)")
    p.add_argument("--seeds", default="0", help="seeds of every arm, comma-separated")
    p.add_argument("--arm-seeds", action="append", default=[], metavar="ARM=S,S", help="seeds of one arm (repeatable)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimiser steps per arm")
    budget.add_argument("--epochs", type=int, help="epochs per arm")
    p.add_argument("--common", default="", help="train.py flags for every arm (quoted), e.g. \"--img-size 112 --batch-size 64\"; "
                        "a single flag as --common=--flag")
    p.add_argument("--run-last", default="", metavar="ARM,ARM",
                   help="arms trained after every seed of the others (e.g. the most expensive one)")
    p.add_argument("--baseline", default="ce", help="arm the paired differences are taken against")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--lanes", type=int, default=1, help="arms trained at the same time")
    p.add_argument("--threads", type=int, default=None, help="torch threads per arm (default: CPU cores / lanes)")
    p.add_argument("--nice", type=int, default=0, help="niceness added to each training process")
    p.add_argument("--python", default=sys.executable, help="interpreter for train.py")
    p.add_argument("--records", default=None, metavar="DIR",
                   help="keep a copy of every finished run's small files here (no checkpoints; e.g. a folder to "
                        "commit) and restore the runs finished there into --output: a fresh machine trains only "
                        "what the records lack")
    p.add_argument("--report-only", action="store_true", help="train nothing; rewrite the report from what has finished")
    p.add_argument("--stop", action="store_true",
                   help="stop the compare.py running on --output (its arms save their step) and wait for it; "
                        "the other flags may be there and are ignored, so the same command plus --stop works")
    p.add_argument("--stop-wait", type=float, default=600, metavar="S", help="--stop waits this long (default 600 s)")
    return p


def parse_stop_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser("bench/compare.py --stop")
    parser.error = lambda message: fail(message)  # type: ignore[method-assign]
    parser.add_argument("--stop", action="store_true")
    parser.add_argument("--output", required=True)
    parser.add_argument("--stop-wait", type=float, default=600)
    args = parser.parse_known_args(argv)[0]
    if args.stop_wait <= 0:
        fail("--stop-wait must be positive")
    return args


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[Arm], list[str]]:
    parser = get_args_parser()
    parser.error = lambda message: fail(message)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    from data import DATASETS

    if args.dataset not in DATASETS:
        fail(f"--dataset {args.dataset!r} is unknown; choose from {', '.join(sorted(DATASETS))}")
    if args.data_root and not Path(args.data_root).is_dir():
        fail(f"--data-root {args.data_root} is not a directory")
    if args.data_root:
        args.data_root = str(Path(args.data_root).resolve())
    args.output = str(Path(args.output).resolve())
    if args.records:
        args.records = str(Path(args.records).resolve())
        if args.records == args.output:
            fail("--records must be another folder than --output")
    for flag in ("steps", "epochs", "lanes"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            fail(f"--{flag} must be positive")
    if args.threads is not None and args.threads <= 0:
        fail("--threads must be positive")
    seeds = parse_seeds(args.seeds)
    arms = parse_arms(args.methods, args.arm)
    for spec in args.arm_seeds:
        name, eq, text = spec.partition("=")
        match = [a for a in arms if a.name == name]
        if not eq or not match:
            fail(f"--arm-seeds {spec!r}: expected ARM=S,S with ARM one of {', '.join(a.name for a in arms)}")
        match[0].seeds = parse_seeds(text, f"--arm-seeds {name}=")
    for arm in arms:
        arm.seeds = arm.seeds or list(seeds)
    args.run_last = [name for name in args.run_last.split(",") if name]
    unknown = [name for name in args.run_last if name not in {a.name for a in arms}]
    if unknown:
        fail(f"--run-last {unknown[0]!r} is not an arm; arms: {', '.join(a.name for a in arms)}")
    try:
        common = shlex.split(args.common)
    except ValueError as exc:
        fail(f"--common: {exc}")
    bad = reserved_flag(common)
    if bad:
        fail(f"--common may not hold {bad}: compare.py sets it for every arm")
    for arm in arms:
        check_arm_flags(arm, common, args.dataset)
    return args, arms, common


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--stop" in argv:
        stop = parse_stop_args(argv)
        return stop_running(Path(stop.output).resolve(), stop.stop_wait)
    args, arms, common = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        Runner(args, arms, common).sync_records()
        rows = write_report(out, arms, args)
        print(f"wrote {out / 'RESULTS.md'} ({sum(r['status'] == 'done' for r in rows)} finished runs)")
        return 0
    lock = out / "compare.pid"
    other = running_pid(lock, "compare.py")
    if other:
        fail(f"another compare.py (pid {other}) is running on {out}; wait for it or stop it (kill {other})")
    lock.write_text(f"{os.getpid()}\n")
    runner = Runner(args, arms, common)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    try:
        total = sum(len(a.seeds) for a in arms)
        print(f"compare.py: {len(arms)} arms, {total} runs, {args.lanes} lane(s) x {runner.threads} thread(s), "
              f"output {out}", flush=True)
        runner.run()
        write_report(out, arms, args)
    finally:
        lock.unlink(missing_ok=True)
    if runner.stopping:
        return 130
    print(f"wrote {out / 'results.csv'}, {out / 'RESULTS.md'}, {out / 'per_class_recall.png'}, "
          f"{out / 'mean_acc_curves.png'}", flush=True)
    if runner.failed:
        print(f"error: {len(runner.failed)} run(s) failed: {', '.join(runner.failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
