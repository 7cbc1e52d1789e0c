#!/bin/bash
# Session 27, prepared; run in session 28 (13:11 UTC, qa_smem_ab_s27_h200.json; kept at D = 128): the tree's kernel files against the tree + qa_smem_s27.patch
# (QA_SMEM: the recovery MMA's A operand from shared memory; qa_smem_ab_s27.py says why and what the static counts
# were). Checks (25 cases, both forms, against the fp32 reference and the tree), then whole steps, 5 interleaved rounds,
# at the targets' cells first. If it wins at the targets: land the patch (the launcher's rule as in the patch), add the
# CPU compile variants with QA_SMEM and a GPU test that the launcher leaves it off where a block would no longer fit
# twice, run the GPU tiers and the table (`PYTHONPATH=. python benchmarks/decode_attention.py --out
# $OUT/decode_attention_h200.json`).
# Run from the repository root on the device: bash benchmarks/results/experiments/prepared_qa_smem_s27.sh (JSON under
# $OUT). SETUP_ONLY=1 builds the folders and stops (checked on the CPU machine).
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s27q && mkdir -p /tmp/s27q/base /tmp/s27q/qa
cp $K/cuda.py $K/spark_walk.cu /tmp/s27q/base/ && cp $K/cuda.py $K/spark_walk.cu /tmp/s27q/qa/
(cd /tmp/s27q/qa && patch -p4 -s < "$OLDPWD/$X/qa_smem_s27.patch") || { echo "qa_smem_s27.patch does not apply"; exit 1; }
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 560 python $X/qa_smem_ab_s27.py $OUT/qa_smem_ab_s27_h200.json main:/tmp/s27q/base qa:/tmp/s27q/qa 2>&1 \
  | grep -v "^check" | tail -20
date -u
