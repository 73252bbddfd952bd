#!/usr/bin/env bash
# Issue 8's figures on the lent GPU machine, one stage per device `run` call (each under its 10-minute limit).
# Here first:   bash benchmarks/gpu/fetch_wheels.sh        (fills .whl/, carried by the call)
# Then, per call (carry [".whl"]):   bash benchmarks/gpu/run_on_device.sh STAGE
#   speed     per-step ratio and output difference per engine option, VAE dtypes   (Wan 1.3B, ~8 min)
#   overhead  a row through worker.py vs the bare call, 832x480x81, 30 steps       (Wan 1.3B, ~7 min)
#   lowvram   profile 4 vs all resident: peak memory and time                      (Wan 14B, ~9 min)
#   loading   safetensors -> GPU for 1.3B and 14B, and switches                    (~6 min)
#   speed14   per-step ratio for 14B, default and compile only (two 14B resident: use kind nvidia-h200)
# The weights are built on first use under /tmp/wan-random and reused while the machine stays warm.
# Every stage's output is also written to $OUT/<stage>.log, which comes back with the call.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage="${1:?stage: speed | overhead | lowvram | loading | speed14}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="${OUT:-/tmp}/${stage}.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
case "$stage" in
  speed)    python3 benchmarks/gpu/step_speed.py --size 1.3B --steps 8 --runs 2 ;;
  speed14)  python3 benchmarks/gpu/step_speed.py --size 14B --steps 4 --runs 1 --variants default,compile ;;
  overhead) python3 benchmarks/gpu/worker_overhead.py --size 1.3B --runs 3 ;;
  lowvram)  python3 benchmarks/gpu/low_vram.py --size 14B --steps 4 ;;
  loading)  python3 benchmarks/gpu/loading.py ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac 2>&1 | grep -v -e "Loading pipeline components" -e "Loading weights" -e "Writing model shards" | tee -a "$log"
