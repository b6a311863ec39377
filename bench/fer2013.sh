#!/bin/sh
# MEK vs cross-entropy on real faces (FER2013), ResNet-18 at 112x112, on a CPU.
#
#   sh bench/fer2013.sh [DATA_ROOT] [OUTPUT_DIR]
#
# DATA_ROOT defaults to ../shared/data/fer2013 (relative to the repository), OUTPUT_DIR to
# output/fer2013. Evaluates on DATA_ROOT/val (FER2013 PublicTest) and prints one table per
# protocol (last evaluation of each arm, at the end of its step budget; no selection on val/):
#   1. from scratch: cross-entropy vs MEK with the paper's defaults (eps 0.3, lambda 0.1,
#      w_k = N/(10 n_k)), the same budget each;
#   2. warm start (stand-in for the paper's face-pretrained backbone): the cross-entropy arm
#      of protocol 1 is the shared stage; from its last.pth every arm fine-tunes with a fresh
#      optimiser and the same budget: cross-entropy (seeds 0 and 1), RSL only, RAC only, MEK,
#      MEK with tempered class weights (power 0.5); see bench/FER2013_RESULTS.md;
#   3. check: the optimised step (bf16 autocast, image and mirror in one pass) against the
#      naive one (fp32, two passes) on a short warm-started MEK arm pair.
# An arm whose run directory already holds its final evaluation is skipped, so the script
# can be re-run (or its arms run in parallel by hand) and only prints the tables again.
# Time alone on 2 cores (estimated from CPU time, fp32): ~45 min by default, ~60 with EXTRA=1.
#
# Environment (budgets): STEPS_SCRATCH (400), STEPS_FT (100), STEPS_CHECK (50), AMP (off:
# on CPUs without native bf16 (no avx512_bf16/AMX) bf16 autocast is ~2x SLOWER than fp32 in
# this codebase; set AMP=bf16 on CPUs that have it), PYTHON (the venv python if present),
# OMP_NUM_THREADS (torch default: all cores), CHECK=0 to skip protocol 3, EXTRA=1 to add more
# warm MEK settings (p 0.5 + lambda 0.03, p 0.5 + eps 0.1, eps 0.1, per-term powers), DEFERRED=1 to add
# the from-scratch deferred-start arm (off by default to keep the default run short), ONLY="arm arm ..."
# to run only those arms (e.g. two lanes in parallel, OMP_NUM_THREADS=1 each) before the tables.
set -eu

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_ROOT="${1:-$REPO/../shared/data/fer2013}"
OUT="${2:-$REPO/output/fer2013}"
STEPS_SCRATCH="${STEPS_SCRATCH:-400}"
STEPS_FT="${STEPS_FT:-100}"
STEPS_CHECK="${STEPS_CHECK:-50}"
AMP="${AMP:-off}"
CHECK="${CHECK:-1}"
. "$REPO/bench/env.sh"  # PYTHON and tcmalloc
[ -d "$DATA_ROOT/train" ] || { echo "error: no train/ under $DATA_ROOT" >&2; exit 2; }
mkdir -p "$OUT"

# Same data, augmentation (resize to 112, hflip 0.5, random erasing 0.25), batch and
# precision for every arm; only the loss and the start point differ.
COMMON="--dataset folder --data-root $DATA_ROOT --backbone resnet18 --img-size 112 --batch-size 64
  --workers 0 --cache-images --channels-last --no-progress --seed 0 --save-interval 0 --overwrite"
SCRATCH="--opt adamw --lr 1e-3 --weight-decay 1e-4 --sched cosine --steps $STEPS_SCRATCH"
FT="--opt adamw --lr 2e-4 --weight-decay 1e-4 --sched cosine --steps $STEPS_FT --init-checkpoint $OUT/scratch_ce/last.pth"
CE="--rsl-eps 0 --rac-weight 0"
MEK="--rsl-eps 0.3 --rac-weight 0.1"

done_run() {  # the run's last record is at its final step
  [ -s "$1/metrics.jsonl" ] && [ -f "$1/last.pth" ] && grep -q "\"step\": $2," "$1/metrics.jsonl"
}

run() {  # run NAME STEPS FLAGS...
  name=$1; steps=$2; shift 2
  if [ -n "${ONLY:-}" ]; then case " $ONLY " in *" $name "*) ;; *) return ;; esac; fi
  if done_run "$OUT/$name" "$steps"; then echo "== $name: done, skipped"; return; fi
  echo "== $name ($(date -u +%H:%M:%S))"
  # shellcheck disable=SC2086
  "$PYTHON" "$REPO/train.py" $COMMON "$@" --output "$OUT/$name" > "$OUT/$name.stdout" 2>&1 \
    || { echo "error: $name failed, see $OUT/$name.stdout" >&2; tail -5 "$OUT/$name.stdout" >&2; exit 1; }
  tail -2 "$OUT/$name.stdout"
}

# 1. from scratch
run scratch_ce  "$STEPS_SCRATCH" $SCRATCH $CE --amp "$AMP"
run scratch_mek "$STEPS_SCRATCH" $SCRATCH $MEK --amp "$AMP"
# MEK's terms deferred to the second half of the budget and ramped, tempered weights
[ "${DEFERRED:-0}" = 1 ] && run scratch_mek_deferred "$STEPS_SCRATCH" $SCRATCH $MEK --amp "$AMP" \
  --mek-start-step $((STEPS_SCRATCH / 2)) --mek-ramp-steps $((STEPS_SCRATCH / 4)) --class-weight-power 0.5

# 2. warm start from scratch_ce/last.pth
run ft_ce      "$STEPS_FT" $FT $CE --amp "$AMP"
run ft_ce_s1   "$STEPS_FT" $FT $CE --amp "$AMP" --seed 1   # seed noise of the baseline (data order, erasing)
run ft_rsl     "$STEPS_FT" $FT --rsl-eps 0.3 --rac-weight 0 --amp "$AMP"
run ft_rac     "$STEPS_FT" $FT --rsl-eps 0 --rac-weight 0.1 --amp "$AMP"
run ft_mek     "$STEPS_FT" $FT $MEK --amp "$AMP"
run ft_mek_p05 "$STEPS_FT" $FT $MEK --amp "$AMP" --class-weight-power 0.5
if [ "${EXTRA:-0}" = 1 ]; then
run ft_mek_p05_l003 "$STEPS_FT" $FT --rsl-eps 0.3 --rac-weight 0.03 --amp "$AMP" --class-weight-power 0.5
run ft_mek_p05_l003_s1 "$STEPS_FT" $FT --rsl-eps 0.3 --rac-weight 0.03 --amp "$AMP" --class-weight-power 0.5 --seed 1
run ft_mek_p05_e01 "$STEPS_FT" $FT --rsl-eps 0.1 --rac-weight 0.1 --amp "$AMP" --class-weight-power 0.5
run ft_mek_e01 "$STEPS_FT" $FT --rsl-eps 0.1 --rac-weight 0.1 --amp "$AMP"
# each term's weights tempered on its own: RSL at power 0.5 with RAC's at 1 (paper) or 0 (unweighted)
run ft_mek_rslp05 "$STEPS_FT" $FT $MEK --amp "$AMP" --rsl-class-weight-power 0.5 --rac-class-weight-power 1
run ft_mek_rslp05_racp0 "$STEPS_FT" $FT $MEK --amp "$AMP" --rsl-class-weight-power 0.5 --rac-class-weight-power 0
fi

# 3. optimised vs naive step (short warm-started MEK arms)
if [ "$CHECK" = 1 ]; then
  CHK="--opt adamw --lr 2e-4 --weight-decay 1e-4 --sched cosine --steps $STEPS_CHECK --init-checkpoint $OUT/scratch_ce/last.pth $MEK"
  run check_bf16_onepass "$STEPS_CHECK" $CHK --amp bf16 --flip-forward one-pass
  run check_fp32_twopass "$STEPS_CHECK" $CHK --amp off --flip-forward two-pass
fi

[ -n "${ONLY:-}" ] && [ -z "${TABLES:-}" ] && exit 0
T="$PYTHON $REPO/bench/fer2013_table.py"
echo
$T --title "Protocol 1: from scratch, $STEPS_SCRATCH steps x 64 (val = PublicTest, %)" \
  CE="$OUT/scratch_ce" "MEK (paper)=$OUT/scratch_mek" \
  $( [ "${DEFERRED:-0}" = 1 ] && echo "MEK-deferred+p0.5=$OUT/scratch_mek_deferred" )
echo
$T --title "Protocol 2: warm start from scratch_ce, +$STEPS_FT steps x 64 (%)" \
  "start (scratch_ce)=$OUT/scratch_ce" CE="$OUT/ft_ce" "CE seed 1=$OUT/ft_ce_s1" "RSL only=$OUT/ft_rsl" "RAC only=$OUT/ft_rac" \
  "MEK (paper)=$OUT/ft_mek" "MEK p0.5=$OUT/ft_mek_p05" \
  $( [ "${EXTRA:-0}" = 1 ] && echo "MEK-p0.5-lambda0.03=$OUT/ft_mek_p05_l003 MEK-p0.5-lambda0.03-seed1=$OUT/ft_mek_p05_l003_s1 MEK-p0.5-eps0.1=$OUT/ft_mek_p05_e01 MEK-eps0.1=$OUT/ft_mek_e01 MEK-rsl-p0.5=$OUT/ft_mek_rslp05 MEK-rsl-p0.5-rac-p0=$OUT/ft_mek_rslp05_racp0" )
if [ "$CHECK" = 1 ]; then
  echo
  $T --title "Check: optimised vs naive step, warm MEK +$STEPS_CHECK steps (%)" \
    "bf16 one-pass=$OUT/check_bf16_onepass" "fp32 two-pass=$OUT/check_fp32_twopass"
fi
