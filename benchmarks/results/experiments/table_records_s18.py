# Session 18 (2026-11-29 23:46-23:47 UTC, one lent H200, torch 2.11.0+cu130, triton 3.6.0, CUDA 13.0), run on branch
# exp/tile-records-v (tile_records_s18.patch applied to e9b8411) as
#   SPARKV_RECORDS=R PYTHONPATH=. python gpu/table_records.py --contexts 32768,131072 --batches 1,8 --head-dims 128 \
#       --out $OUT/table_recordsR.json        (R = 0, 1, 2; -> decode_attention_h200_s18_recordsR.json)
# The bytes column of those tables is the arrays' (prefix.nbytes()); the records add 64 B a tile of padding.
"""The decode table with the records experiment forced: SPARKV_RECORDS=0/1/2; records packed once per prefix."""
import os
import sys

sys.path.insert(0, "benchmarks")
from sparkv.kernels.decode_attn import cuda  # noqa: E402

mode = int(os.environ.get("SPARKV_RECORDS", "0"))
cuda.DEFAULTS["records"] = mode
_pack = cuda.pack_records
_cache = {}


def cached(prefix, with_values=True):
    key = (prefix.keys.kept_values.data_ptr(), prefix.values.data_ptr(), with_values)
    if key not in _cache:
        _cache.clear()
        _cache[key] = _pack(prefix, with_values)
    return _cache[key]


cuda.pack_records = cached
import decode_attention  # noqa: E402

decode_attention.main()
