"""Why do the attention-consistency terms hurt on FERPlus from dlib's backbone? Step-0 measurements.

    python bench/ferplus_probe.py [--data-root ../shared/data/ferplus] [--batches 3] [--out probe.json]
    python bench/ferplus_probe.py --run-flags "--backbone resnet18_s2_w32 --norm imagenet --img-size 65 --num-classes 7"

The model, data and augmentation of bench/ferplus.sh's methods table (``dlib_resnet``, level2, at
112 px, dlib's pretrained trunk, a fresh CAM head with the run's seed 0 initialisation, 8 classes,
majority labels, the training transform), built by train.py's own argument parser and builders. On
--batches training batches of 64, before any update, bench/fer2013_probe.py's ``measure``: each
term's value and the norm of its gradient at the feature map F, for MEK's terms at the paper's
setting ((1 - eps) CE, eps * smoothing, lambda * RAC with eps 0.3, lambda 0.1, class weights
N / (K n_k)) and for EAC's (lambda 5 times the same consistency with uniform weights 1/K); the
features' flip asymmetry ||F - flip F'|| / ||F|| (F' = features of the mirrored image), and the
share of RAC that comes from disgust and from contempt. Compare with FER2013's ResNet-18 from
scratch in bench/FER2013_RESULTS.md (findings, item 2). ``--run-flags`` (train.py flags, after the defaults,
so they override them; ``--pretrained`` is dropped when ``--backbone`` is given) probes another model, e.g.
the fast regime's from-scratch ResNet at 64 or 65 px (docs/attention_consistency.md).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fer2013_probe import EPS, LAM, measure  # noqa: E402
from data import DatasetError  # noqa: E402
from data.loaders import build_data  # noqa: E402
from losses import class_weights_from_counts  # noqa: E402
from train import parse_args  # noqa: E402
from utils.build import build_network  # noqa: E402
from utils.distributed import init_distributed  # noqa: E402
from utils.logging import error_exit  # noqa: E402

EAC_LAMBDA = 5.0  # the official --lam (methods/eac.py)
# bench/ferplus.sh's DLIB and COMMON flags that shape the model and the batches (not the optimiser).
RUN_FLAGS = ["--dataset", "ferplus", "--backbone", "dlib_resnet", "--pretrained", "dlib", "--norm", "dlib",
             "--img-size", "112", "--batch-size", "64", "--workers", "0", "--val-fraction", "0.1",
             "--seed", "0", "--amp", "off", "--device", "cpu"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(REPO / ".." / "shared" / "data" / "ferplus"))
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the measurements here as JSON")
    p.add_argument("--run-flags", default="", help="train.py flags overriding the defaults (quoted)")
    cli = p.parse_args()
    if cli.batches < 1:
        p.error(f"--batches must be at least 1 (got {cli.batches})")
    extra = shlex.split(cli.run_flags)
    base = RUN_FLAGS
    if "--backbone" in extra:  # another backbone: dlib's weights do not fit it
        at = RUN_FLAGS.index("--pretrained")
        base = RUN_FLAGS[:at] + RUN_FLAGS[at + 2:]
    args = parse_args(["--method", "ce", "--data-root", cli.data_root, "--output", "/nonexistent-probe-output",
                       *base, *extra])
    args.device_type, args.world_size = "cpu", 1  # what train.py's setup_run sets
    torch.manual_seed(args.seed)
    dist_info = init_distributed("cpu")
    try:
        data = build_data(args, dist_info)
    except DatasetError as exc:
        error_exit(f"--data-root {cli.data_root}: {exc}")
    train_set, train_loader = data.train_set, data.train_loader
    model, _, _ = build_network(args, args.backbone, "cam", len(train_set.classes), torch.device("cpu"), dist_info)
    model.train()
    classes, counts = train_set.classes, train_set.class_counts()
    mek_weights = class_weights_from_counts(counts)
    eac_weights = torch.full((len(classes),), 1.0 / len(classes))
    disgust = classes.index("disgust")
    contempt = classes.index("contempt") if "contempt" in classes else None  # absent at --num-classes 7
    rows = []
    for batch, (images, labels, *_) in enumerate(train_loader):
        if batch == cli.batches:
            break
        mek, *_ = measure(model, images, labels, mek_weights, eps=EPS, lam=LAM, disgust=disgust)
        mek_c = (measure(model, images, labels, mek_weights, eps=EPS, lam=LAM, grads=False, disgust=contempt)[0]
                 if contempt is not None else {"rac_disgust_share": 0.0})
        eac, *_ = measure(model, images, labels, eac_weights, eps=EPS, lam=EAC_LAMBDA, disgust=disgust)
        row = {"batch": batch, "ce": mek["ce"], "g_ce_x0.7": mek["g_ce"], "g_smooth_x0.3": mek["g_smooth"],
               "rac": mek["rac"], "g_rac_x0.1": mek["g_rac"], "rac_disgust_share": mek["rac_disgust_share"],
               "rac_contempt_share": mek_c["rac_disgust_share"], "eac_term": eac["rac"], "g_eac_x5": eac["g_rac"],
               "feat_flip_asym": mek["feat_flip_asym"], "feat_norm": mek["feat_norm"]}
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "batch"}
    print("mean", json.dumps({k: round(v, 4) for k, v in mean.items()}))
    g_ce = mean["g_ce_x0.7"] / (1 - EPS)  # measure() reports (1 - eps) CE's gradient; the ratios use CE's own
    print(f"at step 0, gradient norm at F relative to cross-entropy's: MEK's lambda*RAC "
          f"{mean['g_rac_x0.1'] / g_ce:.2f}, EAC's lambda*term {mean['g_eac_x5'] / g_ce:.2f}, "
          f"RSL's smoothing part {mean['g_smooth_x0.3'] / g_ce:.2f}")
    if cli.out:
        Path(cli.out).write_text(json.dumps({"classes": classes, "counts": counts, "rows": rows, "mean": mean}, indent=1))


if __name__ == "__main__":
    main()
