#!/bin/sh
# Every registered method on FER2013, side by side (bench/compare.py): ResNet-18 at 112 px from
# random init, 3 epochs of batch 64 (1,344 steps) each, evaluated on val/ (= PublicTest) every
# 224 steps; seeds 0, 1 and 2 for ce (the noise rule's floor is ce's spread over its seeds), 0 and 1
# for mek, seed 0 for the others.
#
#   sh bench/compare_fer2013.sh [DATA_ROOT] [OUTPUT_DIR]        # start, or resume: the same command
#   nohup sh bench/compare_fer2013.sh > $HOME/runs/fer2013_compare.log 2>&1 &
#   REPORT_ONLY=1 sh bench/compare_fer2013.sh                    # rewrite RESULTS.md from finished arms
#   STOP=1 sh bench/compare_fer2013.sh                           # pause: the running arm saves its step
#
# DATA_ROOT defaults to ../shared/data/fer2013 (next to the repository), OUTPUT_DIR to
# $HOME/runs/fer2013_compare (outside the work tree). Finished arms are skipped; an arm that was
# stopped resumes from its last.pth. Every finished run's small files (metrics, config, command,
# log, machine; no checkpoints) are also kept in RECORDS (default bench/records/fer2013_compare in
# the repository: commit it); a run finished there is restored into OUTPUT_DIR and not trained
# again, so a fresh machine (an empty OUTPUT_DIR) trains only what the records lack. One lane,
# nice 10; THREADS torch threads (default 1, the faster choice on a shared 2-core CPU; THREADS=2 on
# an idle one). Threads do not change the results' flags.
# Two stages, warm first once its starting point exists:
#   warm (OUTPUT_DIR/warm): from the scratch cross-entropy arm's final last.pth (seed 0), every
#     method whose model is that network (backbone + CAM head: ce, mek, eac, focal,
#     balanced-softmax, logit-adjust) fine-tunes 224 steps (half an epoch) with a fresh AdamW at
#     lr 2e-4, cosine, evaluated every 56 steps; seeds 0 and 1 for ce and mek. This is
#     bench/fer2013.sh's protocol 2, a stand-in for the papers' face-pretrained backbones. ldam
#     (cosine head), rul, dan and face2exp (heads of their own) do not fit that checkpoint.
#   scratch (OUTPUT_DIR): every method from random init, the budget above; face2exp runs last.
# face2exp needs unlabelled faces and a fine-tuning stage inside the budget: it gets FER2013's
# train/ images without their labels, mu 1 (unlabelled batch = 64, not the official 7 x 64) and
# 1 fine-tuning epoch of the 3 (not 125; --finetune-within-budget: 2 MPL epochs, then 1 epoch of
# fine-tuning, 1,344 steps as every arm) at bench/face2exp_fer2013.sh's SGD lr 1e-3, momentum 0.9
# (the official 1e-5 without momentum is meant for 125 epochs: one epoch of it would barely move
# the student); it is the most expensive arm and runs last.
set -eu
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_ROOT="$(cd "${1:-$REPO/../shared/data/fer2013}" && pwd)"
OUT="${2:-$HOME/runs/fer2013_compare}"
. "$REPO/bench/env.sh"  # PYTHON and tcmalloc
EXTRA=""
[ "${REPORT_ONLY:-0}" = 1 ] && EXTRA="--report-only"
THREADS="${THREADS:-1}"
RECORDS="${RECORDS:-$REPO/bench/records/fer2013_compare}"
WARM_INIT="$OUT/ce/seed0/last.pth"
# Model, data, augmentation and precision of both stages (split around --lr, in the order the
# runs recorded in their command.json: compare.py refuses a run whose flags changed).
MODEL="--backbone resnet18 --img-size 112 --batch-size 64 --opt adamw"
TRAIN="--weight-decay 1e-4 --sched cosine --amp off --channels-last --workers 0 --cache-images"
if [ "${STOP:-0}" = 1 ]; then  # compare.py --stop on both stages; the same command without STOP resumes
  rc=0  # try both stages even if the first does not stop in time
  "$PYTHON" "$REPO/bench/compare.py" --stop --output "$OUT/warm" || rc=$?
  "$PYTHON" "$REPO/bench/compare.py" --stop --output "$OUT" || rc=$?
  exit "$rc"
fi
if [ -z "$EXTRA" ]; then  # one run of this script at a time (compare.py also locks each stage's folder)
  for lock in "$OUT/compare.pid" "$OUT/warm/compare.pid"; do
    if [ -f "$lock" ] && kill -0 "$(cat "$lock")" 2>/dev/null; then
      echo "error: compare.py (pid $(cat "$lock")) is already running on $(dirname "$lock"); wait for it or stop it" >&2
      exit 2
    fi
  done
fi

scratch() {
  "$PYTHON" "$REPO/bench/compare.py" --dataset folder --data-root "$DATA_ROOT" \
    --methods ce,mek,eac,focal,ldam,balanced-softmax,logit-adjust,rul,dan \
    --arm face2exp="--method face2exp --unlabeled-root $DATA_ROOT/train --mu 1 --finetune-epochs 1 --finetune-within-budget --finetune-lr 1e-3 --finetune-momentum 0.9" \
    --seeds 0 --arm-seeds ce=0,1,2 --arm-seeds mek=0,1 --run-last face2exp --epochs 3 \
    --common "$MODEL --lr 1e-3 $TRAIN --eval-interval 224 --save-interval 112 --log-interval 28" \
    --lanes 1 --threads "$THREADS" --nice 10 --output "$OUT" --records "$RECORDS" $EXTRA
}

warm() {  # needs the scratch stage's ce seed 0 (its final last.pth), unless the records hold the stage
  if [ ! -d "$RECORDS/warm" ] && ! { [ -f "$OUT/ce/seed0/done.json" ] && [ -f "$WARM_INIT" ]; }; then
    echo "warm stage: waiting for $OUT/ce/seed0 (scratch cross-entropy, seed 0) to finish with its last.pth"
    return 0
  fi
  "$PYTHON" "$REPO/bench/compare.py" --dataset folder --data-root "$DATA_ROOT" \
    --methods ce,mek,eac,focal,balanced-softmax,logit-adjust \
    --seeds 0 --arm-seeds ce=0,1 --arm-seeds mek=0,1 --steps 224 \
    --common "--init-checkpoint $WARM_INIT $MODEL --lr 2e-4 $TRAIN --eval-interval 56 --save-interval 56 --log-interval 28" \
    --lanes 1 --threads "$THREADS" --nice 10 --output "$OUT/warm" --records "$RECORDS/warm" $EXTRA
}

# exit 1 = some arm failed (reported; the other stage still runs); anything else (stopped: 130) stops here
stage() { "$@" || { rc=$?; [ "$rc" = 1 ] || exit "$rc"; echo "warning: $1 stage: an arm failed (see above); going on"; }; }
stage warm      # cheap (about 1.5 h): first, as soon as its starting point exists
stage scratch
stage warm      # a no-op when it ran above; otherwise it runs now
