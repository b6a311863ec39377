#!/bin/sh
# The one-shot GPU check (issue 48): everything a first GPU should tell us, in one call of at most
# 8 minutes, with a summary table printed last. Usage:
#   sh bench/gpu_check.sh                                  # on a CUDA GPU
#   DEVICE=cpu sh bench/gpu_check.sh                       # the rehearsal: the same steps, tiny sizes, CPU
#   DEVICE=cpu SIZE=smallest CHECKS="env runs" RUNS=ce sh bench/gpu_check.sh   # some checks, smallest sizes
# Steps (CHECKS, default all, in this order):
#   env        GPU, torch, CUDA, cuDNN, and what --amp auto chooses here
#   cuda-tests the tests marked cuda (FER_TEST_CUDA=1 pytest -m cuda tests/test_cuda.py)
#   runs       20-step runs on generated faces of each method family: mek (fp16, clipping, channels-last),
#              ce (bf16, --compile), rul, dan, ldam, face2exp (mu 1)
#   resume     a run stopped by SIGTERM and resumed, against the same run unstopped: the weights' difference
#   test-predict  test.py and predict.py on the mek run's checkpoint
#   train-step bench/train_step.py: ResNet-18 at 112 and 224 px, Swin-T at 112; naive and optimised
#   loader     bench/loader_rate.py: the mek-r18 (EAC's noise) and swin transforms with 2, 8 and 16 workers
#   ferplus    with time left and the pack carried (below): the ferplus-fast recipe for the rest of the budget
# Environment:
#   PYTHON (default python), DEVICE (cuda | cpu; default cuda), SIZE (full | small | smallest; default full on
#   cuda, small on cpu; smallest runs 4 steps instead of 20), RUNS (the method runs, default all six),
#   BUDGET_S (seconds for everything, default 480 on cuda, 1800 on cpu), OUT (results: summary.tsv, logs/,
#   *.json; default output/gpu_check), WORK (checkpoints and scratch, not returned; default a temporary
#   folder), PACK (default gpu_pack/ferplus.pack).
# The FERPlus pack: the GPU machine has no dataset and a call carries 64 MiB at most. On a machine with
# FERPlus, before the call:  FERPLUS_ROOT=/path/to/ferplus sh bench/gpu_check.sh pack
# writes gpu_pack/ferplus.pack (git-ignored; ~57 MiB for FERPlus's 32,137 train + valid faces) and its
# .sha256; carry gpu_pack with the call. The check verifies the checksum before unpacking.
set -u

cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-python}"
PACK="${PACK:-gpu_pack/ferplus.pack}"

if [ "${1:-}" = "pack" ]; then
  if [ -z "${FERPLUS_ROOT:-}" ]; then
    echo "error: set FERPLUS_ROOT to a FERPlus release (fer2013new.csv or FER2013*/label.csv with the images)" >&2
    exit 2
  fi
  exec "$PYTHON" bench/ferplus_pack.py build "$FERPLUS_ROOT" "$PACK"
fi

DEVICE="${DEVICE:-cuda}"
case "$DEVICE" in
  cuda) SIZE="${SIZE:-full}"; BUDGET_S="${BUDGET_S:-480}" ;;
  cpu) SIZE="${SIZE:-small}"; BUDGET_S="${BUDGET_S:-1800}" ;;
  *) echo "error: DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
# Faces generated (train / test), image size, batch, steps per run, timed steps of bench/train_step.py,
# its three sizes (ResNet-18 small and large, Swin-T), loader workers and timed batches.
case "$SIZE" in
  full)     FACES="1400 420"; IMG=112; BATCH=32; STEPS=20; SAVE_EVERY=5; BENCH_STEPS=10; R18="112 224"; SWIN=112; WORKERS="2,8,16"; LOADER_BATCHES=20
            FERPLUS_EXTRA="" ;;
  small)    FACES="256 84";   IMG=48;  BATCH=16; STEPS=20; SAVE_EVERY=5; BENCH_STEPS=3;  R18="48 64";   SWIN=56;  WORKERS="0,1,2"; LOADER_BATCHES=4
            FERPLUS_EXTRA="--steps 20 --eval-interval 20" ;;
  smallest) FACES="64 21";    IMG=32;  BATCH=8;  STEPS=4;  SAVE_EVERY=1; BENCH_STEPS=1;  R18="32 48";   SWIN=56;  WORKERS="0,1";   LOADER_BATCHES=2
            FERPLUS_EXTRA="--steps 4 --eval-interval 4 --batch-size 8" ;;
  *) echo "error: SIZE must be full, small or smallest, got '$SIZE'" >&2; exit 2 ;;
esac
CHECKS="${CHECKS:-env cuda-tests runs resume test-predict train-step loader ferplus}"
RUNS="${RUNS:-mek ce rul dan ldam face2exp}"
for check in $CHECKS; do
  case "$check" in
    env|cuda-tests|runs|resume|test-predict|train-step|loader|ferplus) ;;
    *) echo "error: unknown check '$check' in CHECKS (env cuda-tests runs resume test-predict train-step loader ferplus)" >&2
       exit 2 ;;
  esac
done
OUT="${OUT:-output/gpu_check}"
mkdir -p "$OUT/logs" || exit 2
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK" || exit 2
SUMMARY="$OUT/summary.tsv"
printf 'check\tstatus\tseconds\tresult\n' > "$SUMMARY"
START=$(date +%s)
FAILED=0

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
wanted() { case " $CHECKS " in *" $1 "*) return 0 ;; esac; return 1; }

# record NAME STATUS SECONDS RESULT: one row of the summary.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"
  [ "$2" = ok ] || [ "$2" = skipped ] || FAILED=$((FAILED + 1))
}

# run NAME LIMIT_S COMMAND...: the command under timeout (never past the budget), its output in
# OUT/logs/NAME.log; sets STATUS (ok, FAIL rc N, timeout) and SECONDS_TAKEN.
run() {
  _name=$1; _limit=$2; shift 2
  _budget=$(( $(left) - 5 ))
  [ "$_limit" -gt "$_budget" ] && _limit=$_budget
  if [ "$_limit" -lt 5 ]; then
    STATUS=skipped; SECONDS_TAKEN=0; echo "no time left" > "$OUT/logs/$_name.log"; return 1
  fi
  _t0=$(date +%s)
  echo "== $_name (up to ${_limit}s): $*"
  timeout -k 10 "$_limit" "$@" > "$OUT/logs/$_name.log" 2>&1
  _rc=$?
  SECONDS_TAKEN=$(( $(date +%s) - _t0 ))
  case $_rc in
    0) STATUS=ok ;;
    124|137) STATUS=timeout ;;
    *) STATUS="FAIL rc $_rc" ;;
  esac
  [ "$STATUS" = ok ]
}

# report WHAT ARGS...: one line of results (bench/gpu_check_report.py).
report() { "$PYTHON" bench/gpu_check_report.py "$@" 2>&1 | tail -n 1; }

# ---------------------------------------------------------------------------------------------- env
if wanted env; then
  run env 120 "$PYTHON" bench/gpu_check_report.py env "$DEVICE"
  record env "$STATUS" "$SECONDS_TAKEN" "$(tail -n 1 "$OUT/logs/env.log")"
fi

# ---------------------------------------------------------------------------------------- cuda-tests
if wanted cuda-tests; then
  run cuda-tests 150 env FER_TEST_CUDA=1 "$PYTHON" -m pytest -q -n 0 -p no:cacheprovider -m cuda tests/test_cuda.py
  record cuda-tests "$STATUS" "$SECONDS_TAKEN" "$(grep -E '(passed|skipped|failed|error)' "$OUT/logs/cuda-tests.log" | tail -n 1)"
fi

# ------------------------------------------------------------------------------------- method runs
DEMO="$WORK/faces"
if wanted runs || wanted resume || wanted test-predict; then
  set -- $FACES
  if ! "$PYTHON" -m data.demo "$DEMO" --num-train "$1" --num-test "$2" --unlabeled "$1" > "$OUT/logs/faces.log" 2>&1; then
    echo "error: generating the faces failed: $OUT/logs/faces.log" >&2
    exit 1
  fi
fi
if [ "$DEVICE" = cuda ]; then
  FP16="--amp fp16"; BF16="--amp bf16"; COMPILE="--compile"
else  # fp16 autocast needs CUDA; torch.compile's CPU build takes minutes
  FP16="--amp off"; BF16="--amp bf16"; COMPILE=""
fi
COMMON="--dataset demo --data-root $DEMO --img-size $IMG --batch-size $BATCH --no-progress --device $DEVICE --overwrite"

# last_record RUN: the last evaluation's loss and accuracies of WORK/runs/RUN.
last_record() { report last-record "$WORK/runs/$1/metrics.jsonl"; }

# tail_of LOG: the end of a failed step's log, on one line.
tail_of() { tail -n 3 "$OUT/logs/$1.log" | tr '\n' ' ' | cut -c1-240; }

train_run() {  # train_run NAME FLAGS...
  run_name=$1; shift
  case " $RUNS " in *" $run_name "*) ;; *) return 0 ;; esac
  # shellcheck disable=SC2086
  run "run-$run_name" 240 "$PYTHON" train.py $COMMON --steps "$STEPS" --eval-interval "$STEPS" \
    --output "$WORK/runs/$run_name" "$@"
  if [ "$STATUS" = ok ]; then
    result="$(last_record "$run_name"); $(grep -o 'amp [a-z0-9]*, world' "$OUT/logs/run-$run_name.log" | head -n 1 | sed 's/, world//')"
  else
    result="$(tail_of "run-$run_name")"
  fi
  record "run-$run_name" "$STATUS" "$SECONDS_TAKEN" "$result"
}

if wanted runs; then
  train_run mek --method mek --rsl-eps 0.3 --rac-weight 0.1 $FP16 --clip-grad 5 --channels-last
  # shellcheck disable=SC2086
  train_run ce --method ce $BF16 $COMPILE
  train_run rul --method rul
  train_run dan --method dan
  train_run ldam --method ldam
  train_run face2exp --method face2exp --mu 1 --unlabeled-root "$DEMO/unlabeled.txt" --finetune-epochs 0
fi

# -------------------------------------------------------------------------------- kill and resume
if wanted resume; then
  RESUME_STEPS=$((STEPS * 2))
  FLAGS="$COMMON --method mek --rsl-eps 0.3 --rac-weight 0.1 --steps $RESUME_STEPS --eval-interval $RESUME_STEPS"
  FLAGS="$FLAGS --save-interval $SAVE_EVERY"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  run resume-through 240 "$PYTHON" train.py $FLAGS --output "$WORK/runs/through"
  through_status=$STATUS
  # The same run, stopped by SIGTERM once its first periodic checkpoint exists, then resumed.
  # shellcheck disable=SC2086
  "$PYTHON" train.py $FLAGS --output "$WORK/runs/stopped" > "$OUT/logs/resume-stopped.log" 2>&1 &
  pid=$!
  waited=0
  while [ ! -f "$WORK/runs/stopped/last.pth" ] && kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 2400 ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  stopped_rc=$?
  stopped_at=$(grep -o 'stopped by SIGTERM at step [0-9]*' "$OUT/logs/resume-stopped.log" | grep -o '[0-9]*$')
  # shellcheck disable=SC2086
  run resume-resumed 240 "$PYTHON" train.py $FLAGS --output "$WORK/runs/stopped" --resume auto
  resumed_status=$STATUS
  if [ "$through_status" = ok ] && [ "$resumed_status" = ok ] && [ -n "$stopped_at" ]; then
    diff=$(report weight-diff "$WORK/runs/through/last.pth" "$WORK/runs/stopped/last.pth")
    record resume ok $(( $(date +%s) - t0 )) "stopped at step $stopped_at of $RESUME_STEPS (rc $stopped_rc), resumed; max |weight difference| to the unstopped run: $diff"
  elif [ -z "$stopped_at" ] && [ "$through_status" = ok ]; then
    record resume "FAIL not stopped" $(( $(date +%s) - t0 )) "the run ended (rc $stopped_rc) before SIGTERM took effect: $OUT/logs/resume-stopped.log"
  else
    record resume "FAIL" $(( $(date +%s) - t0 )) "unstopped: $through_status; resumed: $resumed_status (logs/resume-*.log)"
  fi
fi

# --------------------------------------------------------------------------- test.py, predict.py
if wanted test-predict; then
  checkpoint="$WORK/runs/mek/last.pth"
  [ -f "$checkpoint" ] || checkpoint="$WORK/runs/through/last.pth"
  if [ ! -f "$checkpoint" ]; then
    record test-predict skipped 0 "no checkpoint: the runs or resume check did not run"
  else
    run test 120 "$PYTHON" test.py "$checkpoint" --device "$DEVICE" --workers 0 --no-progress --output "$WORK/test"
    test_status=$STATUS; test_s=$SECONDS_TAKEN
    run predict 120 "$PYTHON" predict.py "$checkpoint" "$DEMO/Image/aligned" --no-detect --device "$DEVICE" \
      --no-progress --output "$WORK/predict"
    if [ "$test_status" = ok ] && [ "$STATUS" = ok ]; then
      faces=$(($(wc -l < "$WORK/predict/predictions.csv") - 1))
      record test-predict ok $((test_s + SECONDS_TAKEN)) \
        "test.py: $(grep -io 'overall[^,;]*' "$OUT/logs/test.log" | head -n 1); predict.py: $faces faces"
    else
      record test-predict "FAIL" $((test_s + SECONDS_TAKEN)) "test.py: $test_status, predict.py: $STATUS (logs/test.log, logs/predict.log)"
    fi
  fi
fi

# ------------------------------------------------------------------------------ bench/train_step.py
if wanted train-step; then
  set -- $R18
  for config in "resnet18 $1" "resnet18 $2" "swin_t $SWIN"; do
    set -- $config
    name="train-step-$1-$2"
    extra=""; [ "$DEVICE" = cuda ] && extra="--compile"
    # shellcheck disable=SC2086
    run "$name" 180 "$PYTHON" bench/train_step.py --backbone "$1" --img-size "$2" --batch-size "$BATCH" \
      --steps "$BENCH_STEPS" --warmup 1 --eval-batches 1 --skip-data --device "$DEVICE" --json "$OUT/$name.json" $extra
    if [ "$STATUS" = ok ]; then
      result=$(report train-step "$OUT/$name.json")
    else
      result="$(tail_of "$name")"
    fi
    record "$name" "$STATUS" "$SECONDS_TAKEN" "$result"
  done
fi

# ---------------------------------------------------------------------------------- loader rates
if wanted loader; then
  run loader 180 "$PYTHON" bench/loader_rate.py --recipes mek-r18,swin --workers "$WORKERS" --batches "$LOADER_BATCHES" \
    --json "$OUT/loader.json"
  if [ "$STATUS" = ok ]; then
    result=$(report loader "$OUT/loader.json")
  else
    result="$(tail_of loader)"
  fi
  record loader "$STATUS" "$SECONDS_TAKEN" "$result"
fi

# ------------------------------------------------------------------------ FERPlus, the time left
if wanted ferplus; then
  if [ ! -f "$PACK" ]; then
    record ferplus skipped 0 "no pack at $PACK (build it with: FERPLUS_ROOT=... sh bench/gpu_check.sh pack; carry gpu_pack)"
  elif ! grep -q '^  ferplus-fast)' train_exp.sh; then
    record ferplus skipped 0 "train_exp.sh has no ferplus-fast recipe yet"
  elif [ "$(left)" -lt 60 ]; then
    record ferplus skipped 0 "$(left)s left of BUDGET_S=$BUDGET_S"
  else
    if run ferplus-unpack 120 "$PYTHON" bench/ferplus_pack.py unpack "$PACK" "$WORK/ferplus"; then
      unpack_s=$SECONDS_TAKEN
      run ferplus 600 env FERPLUS_ROOT="$WORK/ferplus" OUTPUT="$WORK/runs/ferplus-fast" PYTHON="$PYTHON" \
        sh train_exp.sh ferplus-fast --no-progress $FERPLUS_EXTRA
      cp "$WORK/runs/ferplus-fast/metrics.jsonl" "$WORK/runs/ferplus-fast/log.txt" "$OUT/" 2>/dev/null
      if [ -f "$WORK/runs/ferplus-fast/metrics.jsonl" ]; then
        result="$(last_record ferplus-fast) (unpacking ${unpack_s}s)"
      else
        result="$(tail_of ferplus)"
      fi
      # The budget ends the run: a timeout with evaluations logged is the intended end.
      [ "$STATUS" = timeout ] && [ -f "$WORK/runs/ferplus-fast/metrics.jsonl" ] && STATUS=ok
      record ferplus "$STATUS" "$SECONDS_TAKEN" "$result"
    else
      record ferplus "$STATUS" "$SECONDS_TAKEN" "unpacking failed: $(tail -n 1 "$OUT/logs/ferplus-unpack.log")"
    fi
  fi
fi

# ------------------------------------------------------------------------------------- summary
for run_dir in "$WORK"/runs/*/; do
  [ -f "$run_dir/log.txt" ] && cp "$run_dir/log.txt" "$OUT/logs/train-$(basename "$run_dir").txt"
done
echo
echo "gpu_check: DEVICE=$DEVICE SIZE=$SIZE, $(( $(date +%s) - START ))s of BUDGET_S=$BUDGET_S; results in $OUT"
"$PYTHON" bench/gpu_check_report.py table "$SUMMARY"
[ -z "${KEEP_WORK:-}" ] && case "$WORK" in "${TMPDIR:-/tmp}"/gpu_check.*) rm -rf "$WORK" ;; esac
[ "$FAILED" -eq 0 ]
