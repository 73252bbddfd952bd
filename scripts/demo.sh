#!/usr/bin/env bash
# Installs the project, queues a text-to-video task for the tiny Wan model in demo/tasks.db, runs the
# worker until the queue is empty, then shows the finished row (output_location is the mp4).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e . -c constraints/cpu.txt
mkdir -p demo
task_id=$(python -m source.cli.tasks --log-format json add t2v --db-file demo/tasks.db \
  '{"prompt": "a red cat dances on the beach at sunset", "model": "tiny_t2v", "resolution": "64x64",
    "video_length": 17, "steps": 4, "seed": 42}' 2>/dev/null)
python worker.py --db-file demo/tasks.db --main-output-dir demo/outputs --once --log-format console
python -m source.cli.tasks --log-format json show "$task_id" --db-file demo/tasks.db 2>/dev/null
