#!/usr/bin/env bash
# Installs the project (CPU torch from constraints/cpu.txt) and runs lint + the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[dev]' -c constraints/cpu.txt
# One OpenCV wheel (opencv-contrib-python, which mediapipe needs): another one left from an older install
# shares the cv2 folder, so remove it and lay opencv-contrib-python's files again.
if python -m pip show -q opencv-python opencv-python-headless opencv-contrib-python-headless >/dev/null 2>&1; then
  python -m pip uninstall -q -y --root-user-action=ignore opencv-python opencv-python-headless opencv-contrib-python-headless
  python -m pip install -q --disable-pip-version-check --root-user-action=ignore --force-reinstall --no-deps opencv-contrib-python
fi
# tests/web/test_browser.py drives Debian's Chromium (Playwright cannot download its own browsers here):
# install it when missing, quietly and best effort (the test skips, saying why, when there is none).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "chromium could not be installed: the browser test will skip" >&2
fi
python -m ruff check .
# One test process per core (-n auto; two on CI): most tests wait on a worker process, a subprocess or the
# database, so the suite takes about half the time of one process. `-n 0` runs it in one process.
python -m pytest -q -n auto --dist worksteal "$@"
