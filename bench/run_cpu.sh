#!/bin/sh
# Run bench/train_step.py with tcmalloc preloaded. On CPU, a training step allocates and frees
# many large activation buffers; tcmalloc reuses them where glibc malloc returns them to the OS
# and faults them in again. Usage: sh bench/run_cpu.sh --backbone resnet18 --img-size 112 [...]
# Environment: PYTHON (default: python), TCMALLOC (path of libtcmalloc_minimal.so.4 or libtcmalloc.so.4).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON="${PYTHON:-python}"
LIB="${TCMALLOC:-}"
if [ -z "$LIB" ]; then
  for candidate in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 \
                   /usr/lib64/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4; do
    if [ -f "$candidate" ]; then LIB="$candidate"; break; fi
  done
fi
if [ -n "$LIB" ] && [ -f "$LIB" ]; then
  case ":${LD_PRELOAD:-}:" in
    *":$LIB:"*) ;;
    *) LD_PRELOAD="$LIB${LD_PRELOAD:+:$LD_PRELOAD}"; export LD_PRELOAD ;;
  esac
else
  echo "note: tcmalloc not found (Debian/Ubuntu: apt-get install libtcmalloc-minimal4); running with glibc malloc" >&2
fi
exec "$PYTHON" "$HERE/train_step.py" "$@"
