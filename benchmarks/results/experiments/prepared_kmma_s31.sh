#!/bin/bash
# Session 31: the kernel folders of its device runs, made from the history (run from the repository root of a
# checkout with git, on the CPU machine; then carried to the device as gpu/):
#   gpu/s31/head     39cc666's kernel files (the walk at DK = 64; before RS_SMEM)
#   gpu/s31/kmma2    head with `cuda.kept_mma` returning 2 at D = 128 (session 27's KEPT_MMA 2 at every DK)
#   gpu/s31/kmma3    head + kept_mma3_s31.patch (KEPT_MMA 3: interleaved nibbles, padded rows; mode 2 at odd DK)
#   gpu/s31/headsm   head + scale_smem_s24.patch;  gpu/s31/kmma3sm: kmma3 + scale_smem_s24.patch
#   gpu/s31/rsk      0a403e0's files (RS_SMEM; the measured folder derived it in the .cu file, same SASS)
#   gpu/s31/tree     0a403e0's files;  gpu/s31/rule: e43f06b's (the kept MMA from DK = 65)
#   gpu/s31/m64      e43f06b's with `cuda.kept_mma` returning 2 from DK = 64 at D = 128 with 1-4 query heads
# Usage: SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh      (folders only)
#        bash benchmarks/results/experiments/prepared_kmma_s31.sh OUT.json           (on the device: + one A/B)
# The device runs (BENCHMARKS.md "Session 31"): benchmarks/results/ncu/s31_ncu_kmma_g4.sh (head, kmma2),
# benchmarks/results/ncu/s31_ncu_kmma3.sh (head, kmma3), then kmma_scale_ab_s31.py, rs_smem_ab_s31.py,
# kept_mma_even_ab_s31.py and kept_mma_edges_ab_s31.py with the folders their docstrings name.
# The folders measured were made by hand from the same sources; rsk derived RS_SMEM inside the .cu file (the same SASS
# as 0a403e0's), and kmma2, rule and m64 differed from these only in comments.
set -euo pipefail
X=benchmarks/results/experiments
from_rev() {  # DIR REV: REV's kernel files
  rm -rf "$1" && mkdir -p "$1"
  for f in cuda.py spark_walk.cu; do git show "$2:sparkv/kernels/decode_attn/$f" > "$1/$f"; done
}
with_patch() {  # DIR PATCH
  (cd "$1" && patch -s --no-backup-if-mismatch -p4 < "$OLDPWD/$2")
}
from_rev gpu/s31/head 39cc666
from_rev gpu/s31/kmma2 39cc666
sed -i 's/        return 2 if kept >= 96 or (kept % 2 and kept >= 65) else 0/        return 2/' gpu/s31/kmma2/cuda.py
grep -q "^        return 2$" gpu/s31/kmma2/cuda.py || { echo "kmma2: kept_mma's D = 128 rule not found"; exit 1; }
from_rev gpu/s31/kmma3 39cc666 && with_patch gpu/s31/kmma3 $X/kept_mma3_s31.patch
from_rev gpu/s31/headsm 39cc666 && with_patch gpu/s31/headsm $X/scale_smem_s24.patch
rm -rf gpu/s31/kmma3sm && cp -r gpu/s31/kmma3 gpu/s31/kmma3sm && with_patch gpu/s31/kmma3sm $X/scale_smem_s24.patch
from_rev gpu/s31/rsk 0a403e0
from_rev gpu/s31/tree 0a403e0
from_rev gpu/s31/rule e43f06b
from_rev gpu/s31/m64 e43f06b
sed -i 's/        return 2 if kept >= 65 else 0/        return 2 if kept >= 64 else 0/' gpu/s31/m64/cuda.py
grep -q "kept >= 64 else 0" gpu/s31/m64/cuda.py || { echo "m64: kept_mma's D = 128 rule not found"; exit 1; }
[[ -n "${SETUP_ONLY:-}" ]] && exit 0
PYTHONPATH=. python $X/targets_ab_s29.py "$1" head:gpu/s31/head kmma2:gpu/s31/kmma2 kmma3:gpu/s31/kmma3
