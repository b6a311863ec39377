# Sourced by the bench/*.sh drivers after they set REPO (the repository root): picks PYTHON (given, else the
# first virtual environment found, else python3 on PATH) and preloads tcmalloc where it is installed
# (Debian/Ubuntu package libtcmalloc-minimal4: +4% per step on the Xeon of bench/RESULTS.md).
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  for candidate in "${VIRTUAL_ENV:-/nonexistent}" "$REPO/.venv" "$REPO/../venv" "$HOME/venv"; do
    if [ -x "$candidate/bin/python" ]; then PYTHON="$candidate/bin/python"; break; fi
  done
fi
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [ -f "$TCMALLOC" ]; then export LD_PRELOAD="$TCMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"; fi
