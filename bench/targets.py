"""Run bench/train_step.py on the issue's three target configurations and print one table.

    python bench/targets.py [--out output/bench] [--target 2.0] [extra train_step.py flags ...]

ResNet-18 at 112 and 224 and Swin-T at 112 (fewer timed steps: one step takes seconds on a
CPU), each through bench/run_cpu.sh (tcmalloc preloaded when installed), each writing
OUT/<backbone>_<size>.json and .txt. The table gives, per configuration, naive and optimised
training images/s, the speedup, whether it meets --target, and how far the naive step already
is from the device's matmul ceiling (so an unmet target can be told apart from a slow step).
Exit status 0 when every configuration ran and its losses agreed, whatever the speedups.
"""
from __future__ import annotations

import argparse
import json
import os
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


def table(rows: list[tuple[str, dict]], target: float) -> str:
    lines = ["| model | naive img/s | optimised img/s | speedup | target | naive % of ceiling | bound at ceiling |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        naive, fast = r["results"]["naive"], r["results"]["optimised"]
        measured = utilisation(naive, naive, r["args"]["batch_size"])
        share, bound = (f"{measured[2]:.0%} (fp32)", f"{measured[3]:.2f}x") if measured else ("-", "-")
        met = "met" if r["speedup"] >= target else "not met"
        lines.append(f"| {name} | {naive['train_images_per_s']:.1f} | {fast['train_images_per_s']:.1f} | "
                     f"{r['speedup']:.2f} | {met} ({target:g}x) | {share} | {bound} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/bench", help="directory for the .json and .txt of each run")
    parser.add_argument("--target", type=float, default=2.0, help="speedup the optimised step should reach")
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
        print(table(rows, args.target))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
