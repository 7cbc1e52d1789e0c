#!/bin/bash
# Session-3 background GPU job (gpu/ncu_decode.py there = benchmarks/profile_decode.py here) (runs under setsid while the model parts travel): GPU test tier, D=64 exploration,
# Nsight Compute profiles of the decode kernel at 32K x b8. Writes into /root/res/kernel/.
R=/root/res/kernel; mkdir -p $R; cd /root/repo  # the repository copied there by the first call
export PYTHONUNBUFFERED=1 PYTHONPATH=.
(nvidia-smi -L; python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)") > $R/env.txt 2>&1
SPARKV_AUTOTUNE=0 timeout 400 python -m pytest -q -p no:cacheprovider tests -m gpu > $R/gpu_tests.txt 2>&1
timeout 400 python benchmarks/decode_attention.py --explore --head-dims 64 --explore-ratios 0.5,0.8 --out $R/explore_d64.json > $R/explore_d64.txt 2>&1
N="ncu --clock-control none --kernel-name regex:decode_attn_fwd --launch-skip 2 --launch-count 1"
timeout 300 $N --set full -o $R/spark05 -f python gpu/ncu_decode.py spark 0.5 > $R/ncu_spark_run.txt 2>&1
timeout 300 $N --set full -o $R/dense -f python gpu/ncu_decode.py dense > $R/ncu_dense_run.txt 2>&1
ncu -i $R/spark05.ncu-rep --page details --print-details all > $R/ncu_spark05_details.txt 2>&1
ncu -i $R/dense.ncu-rep --page details --print-details all > $R/ncu_dense_details.txt 2>&1
ncu -i $R/spark05.ncu-rep --page source --csv --print-source sass > $R/ncu_spark05_sass.csv 2>&1
echo done > $R/DONE
