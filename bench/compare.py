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
To pause: the same command with ``--stop`` added (or SIGTERM/Ctrl-C to compare.py) stops the
running arms at their next step with a checkpoint of that step; the same command again resumes them.

Records. ``--records DIR`` (a folder in the repository, to commit) keeps a copy of every finished
run's small files (command.json, config.json, metrics.jsonl, done.json, wall_time.json, train.log;
no checkpoints), and restores into OUTPUT (skipped there) a run finished there but not in OUTPUT:
a comparison that outlives one machine (OUTPUT outside the work tree) loses no finished run. done.json
names the machine each run trained on (CPU model, family/model, native bf16, threads) and its wall
time: every training process on the run, a stopped or killed one included (wall_time.json is rewritten
every 30 s while an arm trains, so a compare.py killed with its machine loses at most that much).

After each arm, and at the end, writes to OUTPUT (``--report-only`` just rewrites them; see
bench/compare_report.py): ``results.csv`` (a row per arm and seed: last and best evaluation, best =
best.pth's: highest mean class accuracy on the evaluation split, optimistic, or with train.py's
``--val-fraction``/``--val-split`` on the validation split; where each run trained), ``RESULTS.md``
(mean and std over seeds, paired differences to the baseline with a stated noise rule, also at the
validation-best evaluation; every run's overall / mean class accuracy at up to 12 evaluations),
``per_class_recall.png``, ``mean_acc_curves.png``. Bad input: one ``error:`` line, exit 2. A failed
arm: exit 1 at the end, with the other arms run and reported.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
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

from compare_records import (command_mismatch, copy_record, finish_run, is_done, pid_alive, read_records,  # noqa: E402
                             running_pid, sync_records, wall_so_far, write_wall)
from compare_report import write_report  # noqa: E402

RESERVED = ("--dataset", "--data-root", "--seed", "--output", "--steps", "--epochs", "--resume", "--overwrite")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
WALL_HEARTBEAT_S = 30.0  # how often a training arm's wall_time.json is rewritten


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


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
        if "--method" not in " ".join(tokens):
            fail(f"--arm {name}: name its method (\"--method M ...\")")
        method, rest, i = "mek", [], 0
        while i < len(tokens):
            if tokens[i] == "--method" and i + 1 < len(tokens):
                method, i = tokens[i + 1], i + 2
                continue
            if tokens[i].startswith("--method="):
                method = tokens[i].split("=", 1)[1]
            else:
                rest.append(tokens[i])
            i += 1
        arms.append(Arm(name.strip(), method, rest))
    if not arms:
        fail("no arms: pass --methods ce,mek,... and/or --arm NAME=\"--method M ...\"")
    for i, arm in enumerate(arms):
        if not NAME_RE.match(arm.name):
            fail(f"arm name {arm.name!r} has characters outside [A-Za-z0-9._=+-]")
        if arm.name in {a.name for a in arms[:i]}:
            fail(f"arm {arm.name!r} is given twice")
    return arms


def reserved_flag(tokens: list[str]) -> str | None:
    return next((flag for flag in (tok.split("=", 1)[0] for tok in tokens) if flag in RESERVED), None)


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
    parser.error = lambda message: fail(f"arm {arm.name}: train.py would refuse its flags: {message}")  # type: ignore
    parser.parse_args(argv)


def stop_running(out: Path, wait_s: float) -> int:
    """``--stop``: SIGTERM to the compare.py running on ``out``, then wait for it to exit. Its running
    arms save the step in flight (train.py's graceful stop); the same command resumes them."""
    pid = running_pid(out / "compare.pid", "compare.py")
    if pid is None:
        print(f"no compare.py is running on {out}; nothing to stop", flush=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    print(f"compare.py (pid {pid}) on {out}: sent SIGTERM; waiting for its running arm(s) to save their step", flush=True)
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


class Runner:
    def __init__(self, args: argparse.Namespace, arms: list[Arm], common: list[str]) -> None:
        self.args, self.arms, self.common = args, arms, common
        self.out = Path(args.output)
        self.records = Path(args.records) if args.records else None
        self.lock = threading.Lock()
        self.children: dict[int, subprocess.Popen] = {}
        self.failed: list[str] = []
        self.stopping = False
        self.threads = args.threads or max(1, (os.cpu_count() or 1) // args.lanes)
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
        if is_done(run_dir):
            self.say(f"== {label}: done, skipped")
            return
        pid = running_pid(run_dir / "train.pid", "train.py")
        if pid:
            self.say(f"== {label}: being trained by pid {pid} (another process), skipped")
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "command.json").write_text(json.dumps({"argv": cmd[2:], "data_root": self.args.data_root,
                                                          "output": str(self.out)}, indent=1) + "\n")
        resume = (run_dir / "last.pth").is_file()
        full = cmd + ["--output", str(run_dir)] + (["--resume", "auto"] if resume else ["--overwrite"])
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        self.say(f"== {label}: {'resuming' if resume else 'starting'} ({self.threads} threads) "
                 f"{_dt.datetime.now().strftime('%H:%M:%S')}; log {run_dir / 'train.log'}")
        before, start = wall_so_far(run_dir), time.time()
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write(f"\n# {_dt.datetime.now().isoformat(timespec='seconds')} {shlex.join(full)}\n")
            log.flush()
            with self.lock:
                if self.stopping:
                    return
                prefix = ["nice", "-n", str(self.args.nice)] if self.args.nice else []  # nice execs train.py: same pid
                proc = self.popen(prefix + full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                self.children[proc.pid] = proc
            (run_dir / "train.pid").write_text(f"{proc.pid}\n")
            while True:  # wall_time.json kept current: a compare.py killed with its machine loses little of it
                try:
                    rc = proc.wait(timeout=WALL_HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    write_wall(run_dir, before + time.time() - start)
            with self.lock:
                self.children.pop(proc.pid, None)
        wall = before + time.time() - start  # every process on this run, the killed ones' up to their last heartbeat
        (run_dir / "train.pid").unlink(missing_ok=True)
        finished = rc == 0 and is_done(run_dir)
        finish_run(run_dir, wall, self.threads, finished)
        if finished:
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
        problem = command_mismatch(run_dir, self.command(arm, seed)[2:], self.moved(), f"{arm.name} seed {seed}", advice)
        if problem:
            fail(problem)

    def sync_records(self) -> None:
        """--records: restore the runs finished there (of today's flags) and record those finished here."""
        if self.records:
            try:
                sync_records(self.out, self.records, [(a.name, s, self.command(a, s)[2:]) for a in self.arms
                                                      for s in a.seeds], self.moved(), self.say)
            except ValueError as exc:
                fail(str(exc))

    def run(self) -> None:
        jobs = job_order(self.arms, self.args.run_last, self.args.baseline)
        self.sync_records()
        for arm, seed in jobs:  # before anything runs: an arm's flags may not change between runs
            self.check_recorded(arm, seed, self.out / arm.name / f"seed{seed}",
                                "Use another --output, or delete that folder")
            try:  # nor its time record be unreadable (a lane thread would die on it mid-run)
                wall_so_far(self.out / arm.name / f"seed{seed}")
            except ValueError as exc:
                fail(str(exc))
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


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("bench/compare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--dataset", help="a registered dataset: raf-db, folder, ferplus, affectnet, demo, ... (required)")
    p.add_argument("--data-root", default=None, help="dataset root (default: the dataset's default root)")
    p.add_argument("--methods", default=None, help="comma-separated arms: METHOD or METHOD:--flag=value --flag2=value")
    p.add_argument("--arm", action="append", default=[], metavar='NAME="--method M FLAGS"', help="a named arm (repeatable)")
    p.add_argument("--seeds", default="0", help="seeds of every arm, comma-separated")
    p.add_argument("--arm-seeds", action="append", default=[], metavar="ARM=S,S", help="seeds of one arm (repeatable)")
    budget = p.add_mutually_exclusive_group()  # one of them is required, but with --stop
    budget.add_argument("--steps", type=int, help="optimiser steps per arm (or --epochs)")
    budget.add_argument("--epochs", type=int, help="epochs per arm (or --steps)")
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
    p.add_argument("--records", default=None, metavar="DIR", help="keep every finished run's small files here (no "
                   "checkpoints) and restore those into --output: a fresh machine trains only what the records lack")
    p.add_argument("--report-only", action="store_true", help="train nothing; rewrite the report from what has finished")
    p.add_argument("--stop", action="store_true", help="stop the compare.py running on --output (its arms save their "
                   "step) and wait for it; the other flags may be there and are not checked: the same command plus --stop")
    p.add_argument("--stop-wait", type=float, default=600, metavar="S", help="--stop waits this long (default 600 s)")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[Arm], list[str]]:
    parser = get_args_parser()
    parser.error = lambda message: fail(message)  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    args.output = str(Path(args.output).resolve())
    for flag in ("steps", "epochs", "lanes", "threads", "stop_wait"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            fail(f"--{flag.replace('_', '-')} must be positive")
    if args.stop:  # the rest of the command is not checked: the same command plus --stop stops it
        return args, [], []
    if args.dataset is None or (args.steps is None) == (args.epochs is None):
        fail("--dataset and one of --steps, --epochs are required (but with --stop)")
    from data import DATASETS

    if args.dataset not in DATASETS:
        fail(f"--dataset {args.dataset!r} is unknown; choose from {', '.join(sorted(DATASETS))}")
    if args.data_root:
        if not Path(args.data_root).is_dir():
            fail(f"--data-root {args.data_root} is not a directory")
        args.data_root = str(Path(args.data_root).resolve())
    if args.records:
        args.records = str(Path(args.records).resolve())
        if args.records == args.output:
            fail("--records must be another folder than --output")
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


def report(out: Path, arms: list[Arm], args: argparse.Namespace) -> list[dict]:
    """write_report, with an unreadable record named in one error line rather than a traceback."""
    try:
        return write_report(out, arms, args)
    except ValueError as exc:
        fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    args, arms, common = parse_args(argv)
    out = Path(args.output)
    if args.stop:
        return stop_running(out, args.stop_wait)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        Runner(args, arms, common).sync_records()
        rows = report(out, arms, args)
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
        print(f"compare.py: {len(arms)} arms, {sum(len(a.seeds) for a in arms)} runs, {args.lanes} lane(s) x "
              f"{runner.threads} thread(s), output {out}", flush=True)
        runner.run()
        report(out, arms, args)
    finally:
        lock.unlink(missing_ok=True)
    if runner.stopping:
        return 130
    print("wrote " + ", ".join(str(out / f) for f in ("results.csv", "RESULTS.md", "per_class_recall.png", "mean_acc_curves.png")))
    if runner.failed:
        print(f"error: {len(runner.failed)} run(s) failed: {', '.join(runner.failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
