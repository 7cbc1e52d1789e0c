#!/bin/bash
# Session 32: the same kernel files (0b1bf47's) built by two NVRTC versions, made on the CPU machine, carried as gpu/:
#   gpu/s32/n130   0b1bf47's cuda.py and spark_walk.cu: builds with the NVRTC that torch loads (the device's 13.0)
#   gpu/s32/n135   the same files, but every build goes through the library named by $AB_NVRTC_LIB
#   gpu/s32/lib    libnvrtc.so.13 and libnvrtc-builtins.so.13.5 of the nvidia-cuda-nvrtc 13.5.37 wheel, xz-compressed
#                  (the wheel itself, 55.5 MiB, would not fit the device's 64 MiB transfer beside the tree)
# Usage (repository root, CPU, after `make install` with the test extras):
#   SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_nvrtc_s32.sh
# Device (carry gpu):
#   bash benchmarks/results/experiments/prepared_nvrtc_s32.sh OUT.json
set -euo pipefail
if [[ -n "${SETUP_ONLY:-}" ]]; then
  rm -rf gpu/s32/n130 gpu/s32/n135 && mkdir -p gpu/s32/n130 gpu/s32/n135 gpu/s32/lib
  for f in cuda.py spark_walk.cu; do
    git show 0b1bf47:sparkv/kernels/decode_attn/$f > gpu/s32/n130/$f
    cp gpu/s32/n130/$f gpu/s32/n135/$f
  done
  sed -i 's/cuda_utils\._get_nvrtc_library()/ctypes.CDLL(__import__("os").environ["AB_NVRTC_LIB"])/' gpu/s32/n135/cuda.py
  [[ $(grep -c 'AB_NVRTC_LIB' gpu/s32/n135/cuda.py) == 2 ]] || { echo "n135: expected the 2 NVRTC call sites"; exit 1; }
  src=$(.venv/bin/python -c 'import nvidia, pathlib; print(next(pathlib.Path(p) for p in nvidia.__path__) / "cu13/lib")')
  [[ -f gpu/s32/lib/libnvrtc.so.13.xz ]] || xz -T2 -9 -c "$src/libnvrtc.so.13" > gpu/s32/lib/libnvrtc.so.13.xz
  [[ -f gpu/s32/lib/libnvrtc-builtins.so.13.5.xz ]] ||
    xz -T2 -9 -c "$src/libnvrtc-builtins.so.13.5" > gpu/s32/lib/libnvrtc-builtins.so.13.5.xz
  exit 0
fi
mkdir -p /tmp/nvrtc135
for f in gpu/s32/lib/*.xz; do xz -dc "$f" > "/tmp/nvrtc135/$(basename "${f%.xz}")"; done
export AB_NVRTC_LIB=/tmp/nvrtc135/libnvrtc.so.13 LD_LIBRARY_PATH=/tmp/nvrtc135:${LD_LIBRARY_PATH:-}
PYTHONPATH=. python benchmarks/results/experiments/nvrtc_ab_s32.py "$1" n130:gpu/s32/n130 n135:gpu/s32/n135
