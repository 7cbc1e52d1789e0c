#!/bin/bash
# Session 32: the kernel folders of its kept-MMA runs, made from the history (repository root of a checkout with git,
# CPU machine; then carried to the device as gpu/):
#   gpu/s31n/now     0b1bf47's kernel files (the rule before this session)
#   gpu/s31n/probe   now with the walk at D = 256 for 1-4 query heads and the kept MMA at D = 64 from DK = 33 for any
#   gpu/s32/now      0b1bf47's kernel files
#   gpu/s32/d64mma   now with the kept MMA at D = 64 for every DK and group
#   gpu/s32/land     now with 4a567d8's D = 64 rule (5-8 query heads at every DK, 1-2 from DK = 41)
#   gpu/s32/d256mma  land with the D = 256 rule (DK > 128) for any group
#   gpu/s32/d256all  land with the kept MMA at D = 256 for 5-8 query heads at every DK (4a567d8's rule)
# The folders measured were made by hand from the same sources: their cuda.py differed from these in comments only.
# Usage: bash benchmarks/results/experiments/prepared_kmma_s32.sh; then, on the device, the commands in the docstrings
# of kept_mma_open_ab_s31.py, kept_mma_d64_ab_s32.py, kept_mma_rule_ab_s32.py and kept_mma_d256_ab_s32.py.
set -euo pipefail
from_rev() {  # DIR REV
  rm -rf "$1" && mkdir -p "$1"
  for f in cuda.py spark_walk.cu; do git show "$2:sparkv/kernels/decode_attn/$f" > "$1/$f"; done
}
swap() {  # FILE OLD NEW: exactly one occurrence of OLD (may span lines) becomes NEW
  python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: expected one occurrence of {old!r}")
open(path, "w").write(text.replace(old, new))
PY
}
D256='    if head_dim == 256 and group <= 4:
        return 2 if kept > 128 else 0'
D64='    if head_dim == 64 and 3 <= group <= 4:
        return 2 if kept > 32 else 0'
D64_NEW='    if head_dim == 64:
        return 2 if group > 4 or kept > (32 if group >= 3 else 40) else 0'
from_rev gpu/s31n/now 0b1bf47
from_rev gpu/s31n/probe 0b1bf47
swap gpu/s31n/probe/cuda.py "$D256" '    if head_dim == 256 and group <= 4:
        return 0'
swap gpu/s31n/probe/cuda.py "$D64" '    if head_dim == 64:
        return 2 if kept > 32 else 0'
from_rev gpu/s32/now 0b1bf47
from_rev gpu/s32/d64mma 0b1bf47
swap gpu/s32/d64mma/cuda.py "$D64" '    if head_dim == 64:
        return 2'
from_rev gpu/s32/land 0b1bf47
swap gpu/s32/land/cuda.py "$D64" "$D64_NEW"
rm -rf gpu/s32/d256mma gpu/s32/d256all && cp -r gpu/s32/land gpu/s32/d256mma && cp -r gpu/s32/land gpu/s32/d256all
swap gpu/s32/d256mma/cuda.py '    if head_dim == 256 and group <= 4:' '    if head_dim == 256:'
swap gpu/s32/d256all/cuda.py "$D256" "$D256"'
    if head_dim == 256:
        return 2'
