#!/usr/bin/env bash
# Installs the project (CPU torch from constraints/cpu.txt) and runs lint + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[dev]' -c constraints/cpu.txt
python -m ruff check .
python -m pytest -q "$@"
