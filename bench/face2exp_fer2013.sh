#!/bin/sh
# Face2Exp vs cross-entropy with few labels on real faces (FER2013), on a CPU.
#
#   sh bench/face2exp_fer2013.sh [DATA_ROOT] [OUTPUT_DIR]
#
# DATA_ROOT defaults to ../shared/data/fer2013 (train/<class>/, val/<class>/ = PublicTest), OUTPUT_DIR to
# output/face2exp_fer2013. Nothing is copied: the split is made of symbolic links and a list file.
#
# Protocol (the paper's setting, scaled to a CPU): a class-balanced labelled fraction of FER2013's
# training images (FRACTION of all of them, the same number per class: 10% = 410 per class, which
# disgust's 436 images allow), the rest of the training images as unlabelled faces (labels never
# read), evaluation on val/. Two arms from scratch, ResNet-18 at IMG px, the same labelled batch and
# the same number of optimiser steps on the classifier that is evaluated:
#   ce        cross-entropy on the labelled fraction alone, MPL_STEPS + FT_EPOCHS epochs of steps;
#   face2exp  teacher + student for MPL_STEPS steps (unlabelled batch MU x batch), then FT_EPOCHS
#             epochs of fine-tuning the student.
# The labelled fraction is balanced already, so both arms shuffle it plainly (no --balanced-sampler).
# Face2Exp's step costs about (1 + 2 MU) teacher and (2 + MU) student image passes against 1 for
# cross-entropy, so "same budget" here means the same labelled steps, not the same compute.
# Prints overall / mean class accuracy and per-class recall of the last evaluation of each arm
# (student and teacher for face2exp). An arm whose directory holds its final record is skipped.
#
# Environment: FRACTION (0.1), IMG (48, FER2013's own size), BATCH (64), MU (2), MPL_STEPS (400),
# FT_EPOCHS (2), LR (1e-3, AdamW, cosine, both networks), FT_LR (1e-3, SGD momentum 0.9), SEED (0),
# PYTHON (default: $VIRTUAL_ENV, .venv, ../venv or ~/venv, whichever has bin/python), OMP_NUM_THREADS (1 is faster than 2 on a shared 2-core CPU).
set -eu

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_ROOT="${1:-$REPO/../shared/data/fer2013}"
OUT="${2:-$REPO/output/face2exp_fer2013}"
FRACTION="${FRACTION:-0.1}"
IMG="${IMG:-48}"
BATCH="${BATCH:-64}"
MU="${MU:-2}"
MPL_STEPS="${MPL_STEPS:-400}"
FT_EPOCHS="${FT_EPOCHS:-2}"
LR="${LR:-1e-3}"
FT_LR="${FT_LR:-1e-3}"
SEED="${SEED:-0}"
. "$REPO/bench/env.sh"  # PYTHON and tcmalloc
[ -d "$DATA_ROOT/train" ] && [ -d "$DATA_ROOT/val" ] || { echo "error: no train/ and val/ under $DATA_ROOT" >&2; exit 2; }
SPLIT="$OUT/split"
mkdir -p "$OUT"

# The split: SPLIT/train/<class>/ links to the labelled fraction, SPLIT/val -> DATA_ROOT/val,
# SPLIT/unlabeled.txt lists every other training image (absolute paths). Deterministic from SEED.
"$PYTHON" - "$DATA_ROOT" "$SPLIT" "$FRACTION" "$SEED" <<'EOF'
import os, random, sys
from pathlib import Path
root, split, fraction, seed = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
files = {c: sorted(p for p in (root / "train" / c).iterdir() if p.is_file()) for c in classes}
total = sum(len(v) for v in files.values())
per_class = int(fraction * total / len(classes))
small = min(len(v) for v in files.values())
if per_class > small:
    sys.exit(f"error: {fraction:g} of {total} images is {per_class} per class, but a class has only {small}")
rng = random.Random(seed)
unlabeled = []
for c in classes:
    chosen = set(rng.sample(range(len(files[c])), per_class))
    (split / "train" / c).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files[c]):
        if i in chosen:
            link = split / "train" / c / path.name
            if not link.is_symlink():
                link.symlink_to(path)
        else:
            unlabeled.append(str(path))
if not (split / "val").is_symlink():
    (split / "val").symlink_to(root / "val")
(split / "unlabeled.txt").write_text("".join(p + "\n" for p in unlabeled))
print(f"split: {per_class} labelled images per class ({per_class * len(classes)} of {total}), "
      f"{len(unlabeled)} unlabelled, in {split}")
EOF

LABELLED=$(find "$SPLIT/train" -type l | wc -l)
STEPS_PER_EPOCH=$((LABELLED / BATCH))
TOTAL=$((MPL_STEPS + FT_EPOCHS * STEPS_PER_EPOCH))
COMMON="--dataset folder --data-root $SPLIT --backbone resnet18 --img-size $IMG --batch-size $BATCH --workers 0
  --no-progress --seed $SEED --save-interval 0 --overwrite --opt adamw --lr $LR --weight-decay 1e-4
  --sched cosine --reprob 0 --hflip 0.5"

done_run() {  # the run's last record is at its final step
  [ -s "$1/metrics.jsonl" ] && grep -q "\"step\": $2," "$1/metrics.jsonl"
}
run() {  # run NAME FINAL_STEP FLAGS...
  name=$1; final=$2; shift 2
  if done_run "$OUT/$name" "$final"; then echo "== $name: done, skipped"; return; fi
  echo "== $name"
  # shellcheck disable=SC2086
  "$PYTHON" "$REPO/train.py" $COMMON --output "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 \
    || { echo "error: $name failed, see $OUT/$name.log" >&2; tail -3 "$OUT/$name.log" >&2; exit 1; }
}

run ce "$TOTAL" --method ce --steps "$TOTAL"
run face2exp "$TOTAL" --method face2exp --steps "$MPL_STEPS" --unlabeled-root "$SPLIT/unlabeled.txt" --mu "$MU" \
  --randaug 2 16 --finetune-epochs "$FT_EPOCHS" --finetune-lr "$FT_LR" --finetune-momentum 0.9

"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for arm, prefix, label in (("ce", "", "cross-entropy, labelled fraction only"), ("face2exp", "", "Face2Exp student"),
                           ("face2exp", "teacher_", "Face2Exp teacher")):
    path = out / arm / "metrics.jsonl"
    if not path.is_file():
        continue
    last = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][-1]
    per_class = " ".join(f"{c[:4]} {a * 100:.1f}" for c, a in zip(last["classes"], last[prefix + "per_class_acc"]))
    rows.append(f"| {label} | {last['step']} | {last[prefix + 'overall_acc'] * 100:.1f} | "
                f"{last[prefix + 'mean_acc'] * 100:.1f} | {per_class} |")
print("| arm | steps | overall | mean | per-class recall |\n|---|---|---|---|---|")
print("\n".join(rows))
EOF
