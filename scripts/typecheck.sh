#!/usr/bin/env bash
# mypy over the installed namespace, `verdict`, from the source tree.
#
# Why a link tree: the repository keeps audit/, gateway/, replay/ at the top and
# setuptools maps them to verdict.audit/.gateway/.replay; mypy does not run the
# editable install's import hook, so it is shown the same layout a wheel has,
# as links into the checkout (build/typecheck/verdict/...), and reports paths in it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
tree="build/typecheck"
rm -rf "$tree"
mkdir -p "$tree/verdict"
for f in verdict/*; do
  ln -s "$root/$f" "$tree/verdict/$(basename "$f")"
done
for package in audit gateway replay; do
  ln -s "$root/$package" "$tree/verdict/$package"
done
cd "$tree"
venv="$root/${VENV:-.venv}"
exec "$venv/bin/mypy" --config-file "$root/pyproject.toml" --python-executable "$venv/bin/python" -p verdict "$@"
