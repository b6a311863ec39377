"""Run bench/train_step.py on the issue's three target configurations and check its two targets.

    python bench/targets.py [--out output/bench] [extra train_step.py flags ...]

ResNet-18 at 112 and 224 and Swin-T at 112 (fewer timed steps: one step takes seconds on a
CPU), each through bench/run_cpu.sh (tcmalloc preloaded when installed), each writing
OUT/<backbone>_<size>.json and .txt. The targets, per configuration, on whatever machine runs it:

1. never slower: the optimised step is at least as fast as the naive one (speedup >= 1.0,
   within the timing noise: the steps' relative half-range, at most 5%);
2. near the ceiling: the speedup is at least 80% of the largest one the device's measured
   matmul ceiling allows (train_step.py's "upper bound" line: best ceiling / naive GFLOP/s);
   equivalently, the optimised step runs at >= 80% of the best ceiling.

The table prints met / not met for each. Exit status 0 when every configuration ran and its
losses agreed, whatever the verdicts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_step import utilisation  # noqa: E402  (bench/ is not a package)

# The targets; Swin-T with fewer timed steps (seconds per step on a CPU).
CONFIGS = {
    "resnet18:112": [],
    "resnet18:224": [],
    "swin_t:112": ["--steps", "5", "--warmup", "2", "--eval-batches", "2"],
}


def run_config(backbone: str, size: int, flags: list[str], out: Path, extra: list[str]) -> dict | None:
    stem = out / f"{backbone}_{size}"
    cmd = ["sh", str(HERE / "run_cpu.sh"), "--backbone", backbone, "--img-size", str(size), *flags, *extra,
           "--json", f"{stem}.json"]
    print(f"== {' '.join(cmd)}", flush=True)
    with open(f"{stem}.txt", "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHON": sys.executable}).returncode
    if code != 0 or not Path(f"{stem}.json").exists():
        print(f"error: {backbone} @ {size} failed (exit {code}); see {stem}.txt", file=sys.stderr)
        return None
    return json.loads(Path(f"{stem}.json").read_text())


CEILING_SHARE = 0.8  # target 2: this share of the largest speedup the ceiling allows
MAX_NOISE = 0.05  # target 1's tolerance is the measured noise, but never more than this


def step_noise(times: list[float]) -> float:
    """Relative half-range of a form's timed steps: how far one median may be off."""
    return (max(times) - min(times)) / 2 / statistics.median(times) if len(times) > 1 else 0.0


def verdicts(result: dict) -> dict:
    """The two targets for one train_step.py result (its --json): speedup, noise, bound, and
    'met' / 'met within noise' / 'not met' for each target ('-' where the bound is unknown)."""
    naive, fast = result["results"]["naive"], result["results"]["optimised"]
    speedup = fast["train_images_per_s"] / naive["train_images_per_s"]
    noise = min(MAX_NOISE, max(step_noise(naive["step_times"]), step_noise(fast["step_times"])))
    if speedup >= 1.0:
        never_slower = "met"
    elif speedup >= 1.0 - noise:
        never_slower = "met within noise"
    else:
        never_slower = "not met"
    measured = utilisation(naive, naive, result["args"]["batch_size"])
    bound = measured[3] if measured else None
    near_ceiling = "-" if bound is None else ("met" if speedup >= CEILING_SHARE * bound else "not met")
    return {"speedup": speedup, "noise": noise, "bound": bound, "naive_share": measured[2] if measured else None,
            "never_slower": never_slower, "near_ceiling": near_ceiling}


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [f"| model | naive img/s | optimised img/s | speedup | noise | bound at ceiling | needed "
             f"({CEILING_SHARE:.0%} of bound) | never slower | >= {CEILING_SHARE:.0%} of bound | naive % of ceiling |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        naive, fast = r["results"]["naive"], r["results"]["optimised"]
        v = verdicts(r)
        bound, needed, share = (("-", "-", "-") if v["bound"] is None else
                                (f"{v['bound']:.2f}x", f"{CEILING_SHARE * v['bound']:.2f}x", f"{v['naive_share']:.0%}"))
        lines.append(f"| {name} | {naive['train_images_per_s']:.1f} | {fast['train_images_per_s']:.1f} | "
                     f"{v['speedup']:.2f} | {v['noise']:.0%} | {bound} | {needed} | {v['never_slower']} | "
                     f"{v['near_ceiling']} | {share} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/bench", help="directory for the .json and .txt of each run")
    parser.add_argument("--config", action="append", metavar="BACKBONE:SIZE",
                        help="run this configuration instead of the three targets (repeatable)")
    args, extra = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, ok = [], True
    for config in args.config or list(CONFIGS):
        backbone, _, size = config.partition(":")
        if not size.isdigit():
            parser.error(f"--config {config!r}: expected BACKBONE:SIZE, e.g. resnet18:112")
        result = run_config(backbone, int(size), CONFIGS.get(config, []), out, extra)
        if result is None:
            ok = False
            continue
        ok &= bool(result["loss_ok"])
        rows.append((f"{backbone} @ {size}", result))
    if rows:
        first = rows[0][1]
        device = first["args"]["device"]
        print(f"\ndevice {device}; CPU {first['cpu']}; torch {first['torch']}; {first['tcmalloc']}")
        print(table(rows))
        for name, r in rows:
            fast = r["results"]["optimised"]
            print(f"{name}: optimised = {fast['flip_forward']}, {'fp32' if fast['amp'] == 'off' else fast['amp']}, "
                  f"{'channels-last' if fast['channels_last'] else 'contiguous'} "
                  f"({fast.get('channels_last_reason', '')}), fused {r['args']['opt']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
