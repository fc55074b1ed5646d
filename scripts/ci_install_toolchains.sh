#!/bin/sh
# Install the two kernel toolchains tests/unit/test_kernels_compile.py needs, on a fresh Debian machine
# (as root): clang-15 with the HIP headers (gfx1100 / gfx90a device code) and NVRTC from pip (sm_90 PTX).
# Neither needs a GPU. PYTHON selects the interpreter the tests run with (default: python3).
set -eu
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends clang-15 hipcc libamdhip64-dev
"$PYTHON" -m pip install --upgrade nvidia-cuda-nvrtc cuda-bindings
clang-15 --version | head -n 1
"$PYTHON" -c "from cuda.bindings import nvrtc; print('NVRTC', nvrtc.nvrtcVersion()[1:])"
