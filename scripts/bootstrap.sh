#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root and install rlzoo with the pinned dependency set.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"rlzoo needs Python 3.11, found {sys.version.split()[0]}"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.rlzoo-installed
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade "pip<27"
  # torch first and alone: pip then picks the build for this host (CPU here, CUDA on GPU hosts).
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -r requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e .
  touch "$stamp"
fi
