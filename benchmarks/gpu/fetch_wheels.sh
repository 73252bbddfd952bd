#!/usr/bin/env bash
# Run HERE (a machine with pip access to the package index), not on the GPU machine: downloads the wheels the
# GPU image lacks into .whl/ (git-ignored) for the device tool to carry (about 43 MB; imageio-ffmpeg is left out:
# its 68 MB wheel alone is over the device's 64 MiB carry limit, and only the CPU baseline's export_to_video needs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl \
  diffusers==0.42.1 structlog==26.1.0 ftfy==6.3.1 wcwidth==0.7.0 av==18.1.0 \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
ls -la .whl
