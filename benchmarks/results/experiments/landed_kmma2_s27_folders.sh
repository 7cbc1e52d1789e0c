#!/bin/bash
# Session 27: builds, on the CPU machine (needs git), the two kernel folders that landed_kmma2_s27_run.sh compares with
# the tree: gpu/s27/base = main before KEPT_MMA 2 (86e1e31's cuda.py and spark_walk.cu) and gpu/s27/v4 = that plus
# session 26's four patches (v1 -> v4, as prepared_kmma_g4_s26.sh applies them). Then, on the device, with carry
# ["gpu"]: bash benchmarks/results/experiments/landed_kmma2_s27_run.sh
set -eu
K=sparkv/kernels/decode_attn
X=$PWD/benchmarks/results/experiments
rm -rf gpu/s27 && mkdir -p gpu/s27/base gpu/s27/v4
for f in cuda.py spark_walk.cu; do git show 86e1e31:$K/$f > gpu/s27/base/$f; cp gpu/s27/base/$f gpu/s27/v4/$f; done
# prepared_kmma_g4_s26.sh applies each patch to a fresh copy of main's files: v4's patch holds v1-v3's changes too
(cd gpu/s27/v4 && patch -p4 -s < "$X/kept_mma_alu_sel_s26.patch")
echo "gpu/s27/base and gpu/s27/v4 ready"
