#!/bin/bash
# Session 26, prepared and not run (device time spent): one device call for the next session. Session 26 landed the
# kept term on the tensor cores (KEPT_MMA) for 5-8 query heads a KV head only: with 2-4 it was 0.77-0.91x although
# its tile loop has 18 % fewer instructions than the walk at DK = 64. Those builds spilled under the 200-register cap
# (so ran uncapped, 222-240 registers) and padded their kept rows (copies straddling lines). Three candidates, each on
# main's kernel files as of a275eca (BENCHMARKS.md "Session 26" item 1 says more):
#   v1 (kept_mma_g4_unpad_s26.patch):  KEPT_MMA at every D = 128, DK % 8 == 0 case, kept rows unpadded (the MMA's
#       window reads land at data-dependent offsets, so padding bought no bank spread); 222 registers uncapped,
#       spills at 200 (the launcher then drops the cap);
#   v2 (kept_mma_g4_qksmem_s26.patch): v1 with the MMA's A operand read from shared memory per k-step instead of 16
#       registers, stored as its four registers {a0, 0, a2, 0} so that one 16-byte load fills them in place (from
#       8-byte pairs the compiler added ~100 moves a tile): tile loop 1513 SASS instructions at DK = 64 with no stack
#       frame under the 200 cap (walk: 1910), 1509 at DK = 48 (walk: 1854), 1504 at DK = 96 with a 16-byte one (walk:
#       2547; the launcher then drops the cap);
#   v3 (kept_mma_all_dk_s26.patch):    v2 at every DK (rows of any copy mode, odd DK included) and head_dim (64: a lane
#       takes half a bitmap word, 256: two): 1562 at DK = 90 (walk: 2468); SmolLM2's D = 64, DK = 32: 922 (walk: 1092);
#       D = 256, DK = 128, 2 query heads a KV head: 2805 (walk: 3765) but a 40-byte stack frame at 255 registers;
#       before the 16-byte A loads it was 1583 at DK = 26 (walk: 1364, so expected to lose at λ = 0.8);
#   v4 (kept_mma_alu_sel_s26.patch):   v3 with each nibble's selectors and mask computed (two table PRMTs, a sign-
#       replicating PRMT) instead of loaded from the 16-entry table: 1786 at DK = 64, 1830 at DK = 90, but 32 fewer
#       16-byte shared-memory loads a tile (v2-v3 read ~1.7x the walk's shared-memory wavefronts by estimate, so the
#       shared-memory pipe may be their limit with 4 query heads; the selectors were checked against the table for all
#       16 nibbles in Python on the CPU).
# VARIANTS="v1 v2 v3 v4" picks which run beside main (default "v2 v3 v4": the four-variant call stays under ~8 min).
# (static counts: `python benchmarks/results/experiments/kept_mma_count_s26.py /tmp/s26k/v2 64 4 200` etc.; 2-core CPU, NVRTC 13.5.37, sm_90,
# pages, bf16, 4 query heads a KV head, 4-warp blocks, cap 200.) The A/B checks every variant against the fp32 reference
# and main (50 checks: D = 64-256, DK 8-128 and odd DK with odd lengths, 2-8 query heads a KV head, bf16 / fp16, pages and
# arrays),
# then times KMMA_SHAPES=g4b: Llama heads 128K·b1 at λ = 0.25, 0.3, 0.5, 0.625, 0.8, 32K·b8 at 0.3, 0.5, smaller cells,
# 64 / 8 heads, SmolLM2 128K·b1 and D = 256 (16 / 8 heads) 32K·b1 at λ = 0.5.
# Run from the repository root on the device: bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh (JSON under
# $OUT). SETUP_ONLY=1 builds the folders and stops (checked on the CPU machine).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s26k && mkdir -p /tmp/s26k/base && cp $K/cuda.py $K/spark_walk.cu /tmp/s26k/base/
for v in v1:kept_mma_g4_unpad_s26 v2:kept_mma_g4_qksmem_s26 v3:kept_mma_all_dk_s26 v4:kept_mma_alu_sel_s26; do
  name=${v%%:*}; patch_file=${v#*:}.patch
  mkdir -p /tmp/s26k/$name && cp $K/cuda.py $K/spark_walk.cu /tmp/s26k/$name/
  (cd /tmp/s26k/$name && patch -p4 -s < "$OLDPWD/$X/$patch_file") || { echo "$patch_file does not apply"; exit 1; }
done
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
folders=""; for v in ${VARIANTS:-v2 v3 v4}; do folders="$folders $v:/tmp/s26k/$v"; done
KMMA_SHAPES=g4b timeout 560 python $X/kept_mma_ab_s26.py $OUT/kept_mma_g4_ab_s27_h200.json main:/tmp/s26k/base \
  $folders 2>&1 | grep -v "^check" | tail -24
date -u
