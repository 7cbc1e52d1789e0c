#!/usr/bin/env bash
# The commands behind REPRODUCTION.md. Every run is resumable: rerun the script after an interruption and it
# continues where it stopped (predictions.jsonl). Afterwards, `sparkv eval report DIR...` renders the tables.
#
#   bash scripts/reproduce.sh              # all sections, on CUDA when available
#   QUICK=1 bash scripts/reproduce.sh      # smoke test: 1k tokens, 2 samples per task, CPU is fine
#   SECTIONS="table sweep" bash scripts/reproduce.sh
#
# Knobs (environment): MODEL (smollm2), DEVICE (cuda if available), LENGTH (4096), LIMIT (samples per RULER task,
# 25), TASKS (RULER tasks, comma-separated; default all 11), BUDGET (SnapKV budget, 128), SEED (42), OUT
# (runs/reproduce), LONGBENCH_DIR (LongBench data/ folder; the LongBench section runs only when it is set), SPARKV
# (command; default `PY -m sparkv.cli`, PY = .venv/bin/python where it exists, else python), SHARDS (1: run each evaluation as that many processes, `--shard I/N`;
# one process of a small model leaves a GPU mostly idle; start `nvidia-cuda-mps-control -d` first to let the
# shards' kernels overlap).
#
# REPRODUCTION.md section 1 (Qwen2.5-Coder-1.5B on an H200):
#   MODEL=qwen2.5-coder-1.5b BUDGET=1024 LIMIT=100 SHARDS=12 SECTIONS=table OUT=runs/reproduce_qwen \
#     bash scripts/reproduce.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The project's venv (make install) when there is one, so that the script works from a fresh shell.
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
SPARKV=${SPARKV:-$PY -m sparkv.cli}
MODEL=${MODEL:-smollm2}
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
LENGTH=${LENGTH:-4096}
LIMIT=${LIMIT:-25}
BUDGET=${BUDGET:-128}
SEED=${SEED:-42}
OUT=${OUT:-runs/reproduce}
SECTIONS=${SECTIONS:-table sweep recovery longbench}
SHARDS=${SHARDS:-1}
if [[ -n "${QUICK:-}" ]]; then LENGTH=1024; LIMIT=2; OUT=${OUT}_quick; fi

RULER_TASKS=${TASKS:-niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery,vt,cwe,fwe}
if [[ "$DEVICE" == cpu ]] && (( SHARDS > 1 )) && [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  # CPU shards share the cores: without this each process starts one thread per core and they thrash.
  export OMP_NUM_THREADS=$(( $(nproc) / SHARDS > 0 ? $(nproc) / SHARDS : 1 ))
fi
COMMON=(--model "$MODEL" --device "$DEVICE" --seed "$SEED" --quiet)
RULER=(--tasks "$RULER_TASKS" --lengths "$LENGTH" --limit "$LIMIT")
run() { echo "+ $*" >&2; $SPARKV "$@"; }
# `eval ruler|longbench ARGS` in SHARDS processes sharing one --out, then once more unsharded: it generates nothing
# and writes metrics.json over every shard's rows.
run_eval() {
  if (( SHARDS > 1 )); then
    local pids=() i
    for ((i = 0; i < SHARDS; i++)); do run "$@" --shard "$i/$SHARDS" & pids+=($!); done
    for i in "${pids[@]}"; do wait "$i"; done
  fi
  run "$@"
}

for section in $SECTIONS; do
  case "$section" in
  table)
    # 1. Paper-shaped table on the RULER suite: full cache, SnapKV, SnapKV+ThinK and SnapKV+SparK at λ 0.5 / 0.8,
    #    small budget (128 tokens kept per head, window of 64 included).
    run_eval eval ruler "${COMMON[@]}" "${RULER[@]}" \
      --press full,snapkv,snapkv+think,snapkv+spark --key-ratio 0.5,0.8 --budget "$BUDGET" \
      --out "$OUT/ruler_table"
    run eval report "$OUT/ruler_table"
    ;;
  sweep)
    # 2. λ sweep 0.3-0.9, channel pruning alone (no eviction, so λ is the only loss): SparK (mean recovery) vs
    #    ThinK vs SparK with recovery=zero (plain unstructured pruning).
    run_eval eval ruler "${COMMON[@]}" "${RULER[@]}" \
      --press full,spark,think --key-ratio 0.3,0.4,0.5,0.6,0.7,0.8,0.9 --recovery mean,zero \
      --out "$OUT/ruler_lambda_sweep"
    run eval report "$OUT/ruler_lambda_sweep"   # also writes accuracy_vs_key_ratio.png
    ;;
  recovery)
    # 3. Recovery ablation at λ 0.5 and 0.8 (SparK alone): zero, constant 0.01, mean (default), mean_linear
    #    (the paper's wording), gaussian, exponential.
    run_eval eval ruler "${COMMON[@]}" "${RULER[@]}" \
      --press full,spark --key-ratio 0.5,0.8 \
      --recovery zero,constant,mean,mean_linear,gaussian,exponential --recovery-constant 0.01 \
      --out "$OUT/ruler_recovery"
    run eval report "$OUT/ruler_recovery"
    ;;
  longbench)
    # 4. LongBench (16 English tasks) with the paper's presses at budget 128; needs the official JSONL files.
    if [[ -n "${LONGBENCH_DIR:-}" ]]; then
      run_eval eval longbench "${COMMON[@]}" --data-dir "$LONGBENCH_DIR" ${QUICK:+--limit 2} \
        --press full,snapkv,snapkv+think,snapkv+spark --key-ratio 0.5,0.8 --budget "$BUDGET" \
        --out "$OUT/longbench_table"
      run eval report "$OUT/longbench_table"
    else
      echo "skipping LongBench: set LONGBENCH_DIR to the folder of LongBench's <task>.jsonl files" >&2
    fi
    ;;
  *) echo "unknown section $section (table, sweep, recovery, longbench)" >&2; exit 2 ;;
  esac
done

# One report over everything (tables per suite; the λ plot merges the sweep and the table runs).
dirs=()
for d in "$OUT"/ruler_table "$OUT"/ruler_lambda_sweep "$OUT"/ruler_recovery "$OUT"/longbench_table; do
  [[ -f "$d/metrics.json" ]] && dirs+=("$d")
done
if (( ${#dirs[@]} )); then run eval report "${dirs[@]}" --out "$OUT"; fi
