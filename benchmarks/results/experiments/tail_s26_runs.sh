#!/bin/bash
# Session 26 (BENCHMARKS.md "Session 26"): the folders and runs of the balanced-tail A/Bs, from the repository root on
# the device (main's kernel files as of a5583b9; $OUT the output folder).
#   bash benchmarks/results/experiments/tail_s26_runs.sh full   # tail_ab_s26.py: main / r (TAIL_TILES = 0) / t8 / t16
#   bash benchmarks/results/experiments/tail_s26_runs.sh pad    # main / 16 KB / 48 KB of unused shared memory / t8,
#                                                               # the three λ = 0.8 cells only
#   SETUP_ONLY=1 ...: build the folders under /tmp/s26 and stop (no GPU needed).
# r, t8 and t16 are main + tail_s26.patch with cuda.TAIL_TILES = 0 / 8 / 16; the pad folders are r with PAD bytes of
# shared memory added to every 8-warp block's fixed part (SMEM_FIXED), nothing else.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
K=sparkv/kernels/decode_attn
X=benchmarks/results/experiments
rm -rf /tmp/s26 && mkdir -p /tmp/s26/base && cp $K/cuda.py $K/spark_walk.cu /tmp/s26/base/
for n in 0 8 16; do
  mkdir -p /tmp/s26/t$n && cp $K/cuda.py $K/spark_walk.cu /tmp/s26/t$n/
  (cd /tmp/s26/t$n && sed -n '/^diff --git a\/sparkv/,$p' "$OLDPWD/$X/tail_s26.patch" | sed -e 's#a/sparkv/kernels/decode_attn/#a/#' \
     -e 's#b/sparkv/kernels/decode_attn/#b/#' | patch -p1 -s) || { echo "tail_s26.patch does not apply"; exit 1; }
  sed -i "s/^TAIL_TILES = 16$/TAIL_TILES = $n/" /tmp/s26/t$n/cuda.py
done
for n in 16384 49152; do
  f=/tmp/s26/pad$n && mkdir -p $f && cp /tmp/s26/t0/* $f/
  python3 - "$f" "$n" <<'PY'
import sys
f, n = sys.argv[1], sys.argv[2]
s = open(f + "/cuda.py").read()
old = '    if tail:\n        d["TAIL"] = tail\n    return d\n'
s = s.replace(old, f'    if tail:\n        d["TAIL"] = tail\n    if warps == 8:\n        d["PAD"] = {n}\n    return d\n')
s = s.replace("* 32 * 4 + walk_list) + tail_bytes", '* 32 * 4 + walk_list) + tail_bytes + d.get("PAD", 0)')
open(f + "/cuda.py", "w").write(s)
c = open(f + "/spark_walk.cu").read()
c = c.replace("#define SMEM_FIXED (QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES) + TAIL_BYTES)",
              "#ifndef PAD\n#define PAD 0\n#endif\n#define SMEM_FIXED (QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES) + TAIL_BYTES + PAD)")
open(f + "/spark_walk.cu", "w").write(c)
assert '"PAD"' in s and "+ PAD)" in c
PY
done
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
date -u
if [ "${1:-full}" = pad ]; then
  sed -e 's/^SHAPES = .*$/SHAPES = ((32, 8, 128, 131072, 1, (0.8,)), (32, 8, 128, 32768, 8, (0.8,)), (9, 3, 64, 131072, 1, (0.8,)))/' \
      -e '/^          (32, 8, 128, 32768, 1/d' -e '/^          (9, 3, 64, 131072, 1, (0.8,)))$/d' $X/tail_ab_s26.py > /tmp/s26/pad_ab.py
  python /tmp/s26/pad_ab.py $OUT/pad_ab_s26_h200.json main:/tmp/s26/base pad16k:/tmp/s26/pad16384 \
    pad48k:/tmp/s26/pad49152 t8:/tmp/s26/t8 2>&1 | grep -v "^check"
else
  python $X/tail_ab_s26.py $OUT/tail_merge_ab_s26_h200.json main:/tmp/s26/base r:/tmp/s26/t0 t8:/tmp/s26/t8 \
    t16:/tmp/s26/t16 2>&1 | grep -v "^check"
fi
date -u
