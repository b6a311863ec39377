#!/bin/sh
# The fast regime's study tables (bench/ferplus_fast.sh TABLES=methods7 or face2exp7) on a lent GPU machine:
# one call of at most 10 minutes, 64 MiB carried, no dataset there. It trains as many of the table's runs
# as fit, several at once on the one GPU, and returns the finished runs' records.
#
#   FERPLUS_ROOT=../shared/data/ferplus sh bench/gpu_check.sh pack    # here, once: gpu_pack/ferplus.pack (git-ignored)
#   TABLE=methods7 sh bench/ferplus_fast_device.sh                    # on the device (the device tool's run,
#                                                                     #   carry ["gpu_pack"], timeout_s 600)
#   sh bench/ferplus_fast_device.sh collect FILES_AT                  # here: the returned records into
#                                                                     #   bench/records/ferplus_fast/, then commit
#
# On the device: checks and unpacks the pack, starts from this checkout's records of TABLE (a finished run is
# not trained again), and runs `TABLES=$TABLE sh bench/ferplus_fast.sh` with LANES runs at once, THREADS CPU
# threads each, until the table is done or BUDGET_S seconds have passed. Then it stops the table (a run not
# finished by then is lost with the machine) and copies, under OUT, every run that finished in this call
# (OUT/records/TABLE/ARM/seedS: the same small files as the committed records), the table's report, each
# run's log and the GPU's name. The runs' commands are the CPU's: train.py's --device auto takes the GPU and
# --amp auto bf16 there, and every record names the machine it trained on.
# Environment: TABLE (methods7 | face2exp7; default methods7), LANES (default 8), THREADS (default 2),
#   BUDGET_S (default 500), PACK (default gpu_pack/ferplus.pack), OUT (default $OUT, else
#   output/ferplus_fast_device), WORK (scratch; default a temporary folder), PYTHON (default python);
#   collect: RECORDS_TO (default bench/records/ferplus_fast).
# Rehearsal on a CPU (nothing is recorded in the repository): DEVICE=cpu sh bench/ferplus_fast_device.sh: the
#   same steps with every arm at REHEARSAL_STEPS (default 6) steps, two lanes of one thread, BUDGET_S 600.
set -eu
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PYTHON="${PYTHON:-python}"
TABLE="${TABLE:-methods7}"
case "$TABLE" in
  methods7|face2exp7) ;;
  *) echo "error: TABLE must be methods7 or face2exp7, got '$TABLE'" >&2; exit 2 ;;
esac

if [ "${1:-}" = collect ]; then  # here: copy the device's records of finished runs into the committed ones
  FROM="${2:?usage: sh bench/ferplus_fast_device.sh collect FILES_AT}"
  if [ ! -d "$FROM/records" ]; then
    echo "error: $FROM/records not found: give the device call's files_at (it holds records/TABLE/ARM/seedS)" >&2; exit 2
  fi
  if grep -q '^cpu (rehearsal)' "$FROM/device.txt" 2>/dev/null; then
    echo "error: $FROM is a rehearsal's output (device.txt: $(cat "$FROM/device.txt")): its short runs are not records" >&2; exit 2
  fi
  added=0
  for run in "$FROM"/records/*/*/seed*; do
    [ -f "$run/done.json" ] || continue  # only finished runs are returned, but check
    rel="${run#"$FROM"/records/}"
    dest="${RECORDS_TO:-$REPO/bench/records/ferplus_fast}/$rel"
    if [ -e "$dest/done.json" ]; then echo "kept $rel (already recorded)"; continue; fi
    mkdir -p "$dest"
    cp "$run"/* "$dest/"
    echo "added $rel"; added=$((added + 1))
  done
  echo "$added run(s) added under bench/records/ferplus_fast/; next: sh bench/ferplus_fast_methods_report.sh, then commit"
  exit 0
fi

DEVICE="${DEVICE:-cuda}"
case "$DEVICE" in
  cuda) LANES="${LANES:-8}"; THREADS="${THREADS:-2}"; BUDGET_S="${BUDGET_S:-500}"; BUDGET="" ;;
  cpu) LANES="${LANES:-2}"; THREADS="${THREADS:-1}"; BUDGET_S="${BUDGET_S:-600}"; BUDGET="--steps ${REHEARSAL_STEPS:-6}" ;;
  *) echo "error: DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
PACK="${PACK:-gpu_pack/ferplus.pack}"
OUT="${OUT:-output/ferplus_fast_device}"
mkdir -p "$OUT/records/$TABLE" "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ferplus_fast_device.XXXXXX")}"
START=$(date +%s)
if [ "$DEVICE" = cuda ]; then
  "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))' \
    > "$OUT/device.txt" || { echo "error: DEVICE=cuda but torch sees no CUDA device (DEVICE=cpu rehearses)" >&2; exit 2; }
else
  echo "cpu (rehearsal): $(uname -m)" > "$OUT/device.txt"
fi
if [ ! -f "$PACK" ]; then
  echo "error: no pack at $PACK: build it here with FERPLUS_ROOT=... sh bench/gpu_check.sh pack and carry gpu_pack" >&2; exit 2
fi
"$PYTHON" bench/ferplus_pack.py unpack "$PACK" "$WORK/ferplus" > "$OUT/logs/unpack.log" 2>&1 || {
  cat "$OUT/logs/unpack.log" >&2; echo "error: unpacking $PACK failed" >&2; exit 1; }

# The committed records are where the table starts (a rehearsal's shorter runs start from none).
mkdir -p "$WORK/records"
if [ -z "$BUDGET" ] && [ -d "$REPO/bench/records/ferplus_fast/$TABLE" ]; then
  cp -R "$REPO/bench/records/ferplus_fast/$TABLE" "$WORK/records/"
fi
before="$(cd "$WORK/records" && find . -name done.json | sort)"

left=$((BUDGET_S - ($(date +%s) - START)))
echo "ferplus_fast_device: $TABLE, $LANES lane(s) x $THREADS thread(s) on $(cat "$OUT/device.txt"), ${left}s left"
: > "$OUT/logs/table.log"  # appended to by the table and by its stop below, so neither overwrites the other
TABLES="$TABLE" LANES="$LANES" THREADS="$THREADS" BUDGET="$BUDGET" RECORDS="$WORK/records" PYTHON="$PYTHON" \
  sh bench/ferplus_fast.sh "$WORK/ferplus" "$WORK/runs" >> "$OUT/logs/table.log" 2>&1 &
table=$!
while kill -0 "$table" 2>/dev/null && [ $(($(date +%s) - START)) -lt "$BUDGET_S" ]; do sleep 5; done
if kill -0 "$table" 2>/dev/null; then
  echo "ferplus_fast_device: BUDGET_S=$BUDGET_S reached; stopping the table (a run stops at its next step; unfinished runs are lost)"
  STOP=1 RECORDS="$WORK/records" PYTHON="$PYTHON" sh bench/ferplus_fast.sh "$WORK/ferplus" "$WORK/runs" >> "$OUT/logs/table.log" 2>&1 || true
fi
wait "$table" || true

# What finished in this call: its records, its logs, the table's report.
count=0
for done in $(cd "$WORK/records" && find . -name done.json | sort); do
  if printf '%s\n' "$before" | grep -qx "$done"; then continue; fi
  run="$(dirname "$done")"
  mkdir -p "$OUT/records/$run"
  cp "$WORK/records/$run"/* "$OUT/records/$run/"
  count=$((count + 1))
done
for log in "$WORK"/runs/"$TABLE"/*/seed*/train.log; do
  [ -f "$log" ] || continue
  seed_dir="$(dirname "$log")"
  cp "$log" "$OUT/logs/$(basename "$(dirname "$seed_dir")")-$(basename "$seed_dir").log"
done
cp "$WORK/runs/$TABLE/RESULTS.md" "$OUT/" 2>/dev/null || true
tail -n 5 "$OUT/logs/table.log"
echo "ferplus_fast_device: $count run(s) of $TABLE finished in $(($(date +%s) - START))s on $(cat "$OUT/device.txt"); records in $OUT/records"
[ -z "${KEEP_WORK:-}" ] && case "$WORK" in "${TMPDIR:-/tmp}"/ferplus_fast_device.*) rm -rf "$WORK" ;; esac
exit 0
