#!/bin/sh
# Every registered method on FER2013, side by side (bench/compare.py): ResNet-18 at 112 px from
# random init, 3 epochs of batch 64 (1,344 steps) each, evaluated on val/ (= PublicTest) every
# 224 steps; seeds 0 and 1 for ce and mek, seed 0 for the others.
#
#   sh bench/compare_fer2013.sh [DATA_ROOT] [OUTPUT_DIR]        # start, or resume: the same command
#   nohup sh bench/compare_fer2013.sh > $HOME/runs/fer2013_compare.log 2>&1 &
#   REPORT_ONLY=1 sh bench/compare_fer2013.sh                    # rewrite RESULTS.md from finished arms
#
# DATA_ROOT defaults to ../shared/data/fer2013 (next to the repository), OUTPUT_DIR to
# $HOME/runs/fer2013_compare (outside the work tree). Finished arms are skipped; an arm that was
# stopped resumes from its last.pth. One lane, nice 10; THREADS torch threads (default 1, the faster
# choice on a shared 2-core CPU; THREADS=2 on an idle one). Threads do not change the results' flags.
# face2exp needs unlabelled faces and a fine-tuning stage inside the budget: it gets FER2013's
# train/ images without their labels, mu 1 (unlabelled batch = 64, not the official 7 x 64) and
# 1 fine-tuning epoch of the 3 (not 125); it is the most expensive arm and runs last.
set -eu
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_ROOT="$(cd "${1:-$REPO/../shared/data/fer2013}" && pwd)"
OUT="${2:-$HOME/runs/fer2013_compare}"
if [ -z "${PYTHON:-}" ]; then  # the first virtual environment found, else python3 on PATH
  PYTHON=python3
  for candidate in "${VIRTUAL_ENV:-/nonexistent}" "$REPO/.venv" "$REPO/../venv" "$HOME/venv"; do
    if [ -x "$candidate/bin/python" ]; then PYTHON="$candidate/bin/python"; break; fi
  done
fi
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [ -f "$TCMALLOC" ]; then export LD_PRELOAD="$TCMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"; fi
EXTRA=""
[ "${REPORT_ONLY:-0}" = 1 ] && EXTRA="--report-only"
exec "$PYTHON" "$REPO/bench/compare.py" --dataset folder --data-root "$DATA_ROOT" \
  --methods ce,mek,eac,focal,ldam,balanced-softmax,logit-adjust,rul,dan \
  --arm face2exp="--method face2exp --unlabeled-root $DATA_ROOT/train --mu 1 --finetune-epochs 1" \
  --seeds 0 --arm-seeds ce=0,1 --arm-seeds mek=0,1 --epochs 3 \
  --common "--backbone resnet18 --img-size 112 --batch-size 64 --opt adamw --lr 1e-3 --weight-decay 1e-4 --sched cosine --amp off --channels-last --workers 0 --cache-images --eval-interval 224 --save-interval 112 --log-interval 28" \
  --lanes 1 --threads "${THREADS:-1}" --nice 10 --output "$OUT" $EXTRA
