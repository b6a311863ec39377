"""The one-line results of bench/gpu_check.sh's checks, and its summary table.

    python bench/gpu_check_report.py env cuda|cpu            # the device, torch, CUDA, cuDNN, --amp auto's choice
    python bench/gpu_check_report.py last-record METRICS     # a run's last evaluation (metrics.jsonl)
    python bench/gpu_check_report.py weight-diff A.pth B.pth # the largest weight difference of two checkpoints
    python bench/gpu_check_report.py train-step JSON         # bench/train_step.py --json: images/s, peak memory
    python bench/gpu_check_report.py loader JSON             # bench/loader_rate.py --json: images/s per worker count
    python bench/gpu_check_report.py table SUMMARY.tsv       # the summary, aligned
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def env_line(device_name: str) -> str:
    import torch

    from utils.device import cpu_name, resolve_amp

    device = torch.device(device_name)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        name = (f"{torch.cuda.get_device_name(0)} (compute capability {major}.{minor}, "
                f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
    else:
        name = cpu_name()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    amp, _ = resolve_amp("auto", device)
    return f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}; --amp auto: {amp}"


def last_record(path: str) -> str:
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    r = json.loads(lines[-1])
    return (f"step {r['step']}: loss {r['loss']:.3f}, overall {100 * r['overall_acc']:.1f}%, "
            f"mean class {100 * r['mean_acc']:.1f}%")


def weight_diff(a_path: str, b_path: str) -> str:
    import torch

    a, b = (torch.load(p, map_location="cpu", weights_only=True)["model"] for p in (a_path, b_path))
    return f"{max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point()):.3g}"


def train_step(path: str) -> str:
    results = json.loads(Path(path).read_text())["results"]
    naive, fast = results["naive"], results["optimised"]
    return (f"images/s naive {naive['train_images_per_s']:.0f}, optimised {fast['train_images_per_s']:.0f}; "
            f"peak MB {naive['train_peak_mb']:.0f} / {fast['train_peak_mb']:.0f}; optimised: amp {fast['amp']}, "
            f"channels-last {fast['channels_last']}")


def loader(path: str) -> str:
    rows = json.loads(Path(path).read_text())
    return "; ".join(f"{r['recipe']} {r['workers']} workers {r['images_per_s']:.0f}/s ({r['per_worker']:.0f} each)"
                     for r in rows)


def table(path: str) -> str:
    rows = list(csv.reader(Path(path).open(), delimiter="\t"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows)


COMMANDS = {"env": env_line, "last-record": last_record, "weight-diff": weight_diff, "train-step": train_step,
            "loader": loader, "table": table}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(COMMANDS[argv[0]](*argv[1:]))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        print(f"no result: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
