#!/usr/bin/env bash
# Create or refresh the project's virtualenv at .venv/ with the pinned versions.
# Safe to re-run: it reinstalls only when requirements.txt, requirements-nodeps.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.harness-installed
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned requirements into .venv (first time: a few minutes)" >&2
  # (this machine's pip config lists local indexes that may be absent: drop those warnings)
  pipq() { .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "^WARNING: Location" >&2); }
  pipq --upgrade pip
  pipq -r requirements.txt
  # packages whose declared pins contradict ours (see the file): without their dependency resolution
  pipq --no-deps -r requirements-nodeps.txt
  pipq --no-deps --no-build-isolation -e .
  # the pins must hold together (pip may warn instead of failing): check the ones that matter
  .venv/bin/python - <<'PY'
import importlib.metadata as md, sys
pins = {"apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1", "mxnet": "1.9.1", "numpy": "1.23.5",
        "nncf": "3.4.0"}
bad = [f"{k} {md.version(k)} (want {v})" for k, v in pins.items() if md.version(k) != v]
if bad:
    sys.exit("[setup] wrong versions installed: " + ", ".join(bad))
import harness  # noqa: F401  (the package itself is importable)
PY
  echo "$want" > "$stamp"
fi
