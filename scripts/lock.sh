#!/usr/bin/env bash
# Regenerate requirements.lock and requirements-dev.lock from pyproject.toml.
#
# Why constraints: a new dependency should not silently move every other pin.
# Existing pins are kept (passed as constraints) unless UPGRADE=1; packages no
# longer needed drop out because the lock is re-read from a fresh environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

constraints=()
if [[ "${UPGRADE:-0}" != "1" ]]; then
  grep -E '^[A-Za-z0-9_.-]+==' requirements.lock requirements-dev.lock -h > "$work/constraints.txt" || true
  constraints=(-c "$work/constraints.txt")
fi

freeze() {  # freeze a venv, without the project itself and without local labels (+cpu)
  "$1/bin/python" -m pip freeze --exclude-editable --all \
    | grep -v -E '^(pip|setuptools|wheel|verdict)( ?@|==)' \
    | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f -t= -k1,1
}

"$PYTHON" -m venv "$work/runtime"
"$work/runtime/bin/python" -m pip install --quiet "${constraints[@]}" .
{
  sed -n '1,/^# Regenerate/p' requirements.lock   # the header explains the torch pin
  freeze "$work/runtime"
} > "$work/requirements.lock"

"$PYTHON" -m venv "$work/dev"
"$work/dev/bin/python" -m pip install --quiet "${constraints[@]}" ".[test]"
{
  sed -n '1,/^-r requirements.lock/p' requirements-dev.lock
  freeze "$work/runtime" > "$work/runtime.txt"
  freeze "$work/dev" | grep -v -x -F -f "$work/runtime.txt"   # what only the tests need
} > "$work/requirements-dev.lock"

mv "$work/requirements.lock" requirements.lock
mv "$work/requirements-dev.lock" requirements-dev.lock
git --no-pager diff --stat -- requirements.lock requirements-dev.lock || true
