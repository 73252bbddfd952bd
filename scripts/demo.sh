#!/usr/bin/env bash
# Installs the project, queues a sample task in demo/tasks.db and runs the worker on it until the
# queue is empty, then shows the finished row.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e . -c constraints/cpu.txt
mkdir -p demo
task_id=$(python -m source.task_cli add ping '{"message": "hello from the demo"}' --db-file demo/tasks.db)
python worker.py --db-file demo/tasks.db --main-output-dir demo/outputs --once --log-format console
python -m source.task_cli show "$task_id" --db-file demo/tasks.db
