"""The CUDA C++ SparK split kernel (``sparkv/kernels/decode_attn/spark_walk.cu``).

GPU tier: against the fp32 PyTorch reference on random data across head dims, kept counts (odd ones too), GQA
groups, recoveries, dtypes, lengths, tails and launch parameters, with every ``torch.empty`` poisoned; and the core
chain: attention over the packed keys == attention over the materialised K̂.
CPU tier: the source compiles for sm_80 and sm_90 with NVRTC (the ``nvidia-cuda-nvrtc`` wheel of the test extras)
for every compile-time variant the launcher can ask for, so CI sees a broken kernel before a GPU does.
"""

from __future__ import annotations

import ctypes
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkv.cache.layout import CompressedKV, DenseKeys, SparKPages, num_words, unpack_bits
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.fused import combine_partials, decode_attn_triton
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.recover.reference import recover_ref
from sparkv.kernels.select_pack.reference import select_pack_ref

CASES = [
    # (B, H, G, S, ST, D, DK, dtype, recovery, lengths)
    (2, 2, 4, 1000, 0, 128, 64, torch.bfloat16, "mean", [1000, 777]),
    (1, 8, 4, 4096, 5, 128, 26, torch.bfloat16, "mean", None),
    (2, 2, 4, 1000, 0, 128, 25, torch.bfloat16, "mean_linear", [999, 33]),
    (3, 3, 3, 1501, 7, 64, 13, torch.bfloat16, "mean", [1501, 1, 700]),
    (2, 3, 3, 999, 0, 64, 32, torch.float16, "constant", None),
    (2, 2, 8, 700, 3, 128, 40, torch.bfloat16, "zero", None),
    (2, 2, 1, 700, 0, 128, 100, torch.float16, "mean", None),
    (1, 2, 2, 2000, 1, 256, 52, torch.bfloat16, "mean", None),
    (1, 2, 5, 300, 0, 256, 128, torch.bfloat16, "mean", None),
    (1, 2, 2, 1000, 3, 256, 77, torch.float16, "mean", [999]),  # odd DK with 8 bitmap words, fp16 at D = 256
    (2, 2, 4, 900, 2, 128, 40, torch.bfloat16, "constant", [900, 300]),  # constant recovery at D = 128
    # Kept rows of an odd number of words (pages copy them in 16-byte chunks), ragged: partial last tiles.
    (2, 2, 4, 1000, 0, 128, 90, torch.float16, "mean", [1000, 517]),
    (2, 3, 3, 999, 4, 64, 26, torch.bfloat16, "mean_linear", [999, 45]),
    # Kept rows of an odd number of 8-byte units (KV_MODE 3), ragged.
    (2, 2, 4, 1000, 0, 128, 52, torch.bfloat16, "mean", [1000, 517]),
    (2, 3, 3, 999, 4, 64, 20, torch.float16, "constant", [999, 45]),
    # 2 query heads a KV head: the q table's 2 columns (GQ = 2), ragged, zero recovery.
    (2, 2, 2, 999, 3, 64, 22, torch.bfloat16, "zero", [999, 300]),
    # Kept rows of 16-byte chunks (KV_MODE 2): 2 a row, swizzled (a power of two, like 4, 8 and 16 above), and 6 a
    # row, padded to 7; ragged.
    (2, 3, 3, 999, 2, 64, 16, torch.float16, "mean", [999, 45]),
    (2, 2, 4, 1000, 0, 128, 48, torch.bfloat16, "mean", [1000, 517]),
    # 5-8 query heads a KV head at D = 128 with DK % 8 == 0: the kept term on the tensor cores (KEPT_MMA; also the
    # G = 8, DK = 40 case above), 64 and 128 (every channel) kept, 8, ragged.
    (2, 2, 8, 1000, 0, 128, 64, torch.float16, "mean", [1000, 517]),
    (1, 2, 6, 700, 2, 128, 128, torch.bfloat16, "mean_linear", None),
    (2, 3, 5, 999, 0, 128, 8, torch.bfloat16, "constant", [999, 45]),
    # The kept term on the tensor cores with A from shared memory (KEPT_MMA 2; also the G = 1, DK = 100 case above):
    # odd DK with 1 and 4 query heads a KV head, 12 chunks a row (unpadded), 8 query heads over 8-byte units and
    # 4-byte words, D = 256 (odd DK too), ragged.
    (2, 2, 4, 1000, 0, 128, 77, torch.bfloat16, "mean", [1000, 517]),
    (2, 3, 1, 999, 2, 128, 65, torch.float16, "mean_linear", [999, 45]),
    (2, 2, 3, 1000, 0, 128, 96, torch.bfloat16, "constant", [1000, 33]),
    (2, 2, 8, 1000, 0, 128, 52, torch.float16, "mean", [1000, 517]),
    (1, 2, 6, 700, 1, 128, 90, torch.bfloat16, "zero", None),
    (1, 2, 2, 1000, 3, 256, 192, torch.bfloat16, "mean", [999]),
    (2, 2, 4, 700, 0, 256, 171, torch.float16, "mean", [700, 45]),
    # KEPT_MMA 2 at D = 64: 5-8 query heads a KV head at every DK (odd, 16-byte chunks, a single kept channel), 1-2
    # from DK = 41.
    (2, 2, 7, 999, 0, 64, 13, torch.bfloat16, "mean", [999, 45]),
    (2, 2, 8, 1000, 2, 64, 32, torch.float16, "constant", [1000, 517]),
    (1, 3, 5, 700, 0, 64, 1, torch.bfloat16, "mean_linear", None),
    (2, 2, 2, 999, 1, 64, 44, torch.bfloat16, "mean", [999, 45]),
    # and at D = 256 with 5-8 at every DK; at D = 128 with 5-8 from DK = 21 (4-byte words, odd, 8-byte units).
    (1, 2, 8, 700, 0, 256, 64, torch.float16, "mean", [699]),
    (2, 2, 8, 1000, 0, 128, 26, torch.bfloat16, "mean", [1000, 517]),
    (2, 3, 5, 999, 1, 128, 39, torch.float16, "mean_linear", [999, 45]),
    (1, 2, 7, 700, 0, 128, 36, torch.bfloat16, "constant", None),
]


def make_case(b, h, g, s, st, d, dk, dtype, recovery, lengths, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).cuda()

    keys, values = rnd(b, h, s, d), rnd(b, h, s, d)
    stat = (torch.rand(b, h, d, generator=gen) + 0.05).cuda()
    packed = select_pack_ref(keys, stat, dk, "code", recovery, recovery_constant=0.3)
    lens = torch.tensor(lengths or [s] * b, dtype=torch.int32, device="cuda")
    tail = (rnd(b, h, st, d), rnd(b, h, st, d)) if st else (None, None)
    return rnd(b, h * g, 1, d), CompressedKV(packed, values, lens), *tail


def rel_err(out, ref):
    assert not torch.isnan(out).any(), "output holds NaN (unwritten or poisoned values)"
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=[f"B{c[0]}-H{c[1]}-G{c[2]}-S{c[3]}-T{c[4]}-D{c[5]}-DK{c[6]}-{c[8]}"
                                              for c in CASES])
@pytest.mark.parametrize("form", ["arrays", "pages"])
def test_cuda_kernel_matches_reference(case, form, poison_empty):
    query, prefix, tail_k, tail_v = make_case(*case, seed=case[3])
    arrays = prefix
    if form == "pages":
        prefix = SparKPages.from_compressed(prefix)
    why = cuda.build(prefix, case[2], case[7])
    if why is not None and "shared memory" in why:
        pytest.skip(why)  # e.g. head_dim 256 with 5+ query heads per KV head on a GPU with less than ~220 KB
    scale = case[5] ** -0.5
    ref = decode_attn_ref(query.float(), prefix, tail_k, tail_v, scale)
    out = decode_attn_triton(query, prefix, tail_k, tail_v, scale, spark_kernel="cuda")
    assert out.dtype == query.dtype and out.shape == query.shape
    assert rel_err(out, ref) < 1e-2
    # Same answer as the Triton kernel, to the precision both keep.
    tri = decode_attn_triton(query, arrays, tail_k, tail_v, scale, spark_kernel="triton")
    assert rel_err(out, tri) < 1e-2
    if form == "pages":  # the same kernel with the same split reads the same numbers: bit-equal to the arrays
        assert torch.equal(out, decode_attn_triton(query, arrays, tail_k, tail_v, scale, spark_kernel="cuda"))


BUFFER_VARIANTS = [dict(stages=1), dict(stages=2), dict(stages=1, min_blocks=3), dict(stages=2, chains=1)]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", BUFFER_VARIANTS, ids=lambda v: "-".join(f"{k}{x}" for k, x in v.items()))
@pytest.mark.parametrize("case", CASES, ids=[f"B{c[0]}-H{c[1]}-G{c[2]}-S{c[3]}-D{c[5]}-DK{c[6]}-{c[8]}" for c in CASES])
@pytest.mark.parametrize("form", ["arrays", "pages"])
def test_cuda_kernel_variants_match_reference(case, variant, form, poison_empty):
    """One and two stages of small-array buffers (their loads are issued at different points), a register cap of
    3 blocks and one walk per token, against the fp32 reference on every case (no tail: the CUDA kernel alone),
    reading arrays or pages."""
    query, prefix, _, _ = make_case(*case, seed=case[3] + 1)
    if form == "pages":
        prefix = SparKPages.from_compressed(prefix)
    why = cuda.build(prefix, case[2], case[7], **variant)
    if why is not None and "shared memory" in why:
        pytest.skip(why)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1, **variant), ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("params", [dict(warps=w, min_blocks=m, chains=c, waves=v, stages=n)
                                    for w, m, c, v, n in [(2, 4, 1, 1, 2), (4, 1, 1, 2, 1), (8, 1, 2, 1, 2),
                                                          (4, 3, 2, 3, 1), (6, 1, 2, 1, 1), (5, 1, 1, 1, 2)]]
                         + [dict(registers=128), dict(warps=8, registers=96)])
def test_cuda_kernel_launch_parameters(params, poison_empty):
    query, prefix, _, _ = make_case(2, 4, 4, 3000, 0, 128, 26, torch.bfloat16, "mean", [3000, 1234], seed=1)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    for form in (prefix, SparKPages.from_compressed(prefix)):
        assert rel_err(cuda.decode_attn_cuda(query, form, 0.1, **params), ref) < 1e-2
        # A split size that leaves most splits of the short row empty.
        assert rel_err(cuda.decode_attn_cuda(query, form, 0.1, chunk=256, **params), ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("warps", [1, 2])
@pytest.mark.parametrize("pages", [False, True], ids=["arrays", "pages"])
def test_swizzled_rows_of_16_chunks_in_any_block(warps, pages, poison_empty):
    """DK = 128 at D = 256: 16 swizzled chunks a kept row; in a 1-warp block the rows start mid-256 bytes of shared
    memory (test_swizzled_rows_start_on_128_byte_lines), which the walk's chunk addresses must allow for."""
    query, prefix, _, _ = make_case(2, 2, 4, 700, 0, 256, 128, torch.bfloat16, "mean", [700, 333], seed=3)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    form = SparKPages.from_compressed(prefix) if pages else prefix
    assert rel_err(cuda.decode_attn_cuda(query, form, 0.1, warps=warps, min_blocks=1), ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("kept, group, warps, stages, dtype, pages, default", [
    (128, 2, 6, 1, torch.bfloat16, True, (6, 1)), (103, 2, 7, 1, torch.float16, False, (7, 1)),
    (77, 4, 7, 1, torch.bfloat16, True, (7, 1)), (52, 8, 6, 1, torch.bfloat16, False, (6, 1)),
    (180, 2, 6, 1, torch.bfloat16, True, (6, 1)), (128, 2, 5, 2, torch.float16, True, (6, 1)),
    (52, 2, 7, 1, torch.bfloat16, False, (4, 2)), (128, 8, 6, 1, torch.bfloat16, True, (4, 2))])
def test_wide_lone_blocks_match_the_reference(poison_empty, kept, group, warps, stages, dtype, pages, default):
    """Blocks of 5-7 warps at D = 256 (wide_lone_block's 6 and 7 with one stage; the walk with its list, the kept
    MMA) on ragged rows, forced and with a split size that leaves splits of the short row empty; on a device with
    the H200's shared memory and multiprocessors, the default launch takes the rule's block."""
    query, prefix, _, _ = make_case(2, 8, group, 2000, 0, 256, kept, dtype, "mean", [2000, 777], seed=kept + group)
    if pages:
        prefix = SparKPages.from_compressed(prefix)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    launch = dict(warps=warps, min_blocks=1, stages=stages)
    plan = cuda.SplitPlan(query, prefix, 0.1, **launch)
    assert (plan.warps, plan.defines["STAGES"]) == (warps, stages)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1, **launch), ref) < 1e-2
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1, chunk=256, **launch), ref) < 1e-2
    props = torch.cuda.get_device_properties(0)
    if (props.shared_memory_per_block_optin, props.multi_processor_count) == (232448, 132):
        p, _, why = cuda.launch_params(prefix, group, dtype)
        assert why is None and (p["warps"], p["stages"]) == default
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1), ref) < 1e-2


def _registers(plan: cuda.SplitPlan) -> int:
    lib = torch.cuda._utils._get_gpu_runtime_library()
    n = ctypes.c_int()
    assert lib.cuFuncGetAttribute(ctypes.byref(n), 4, plan.kernel.func) == 0  # CU_FUNC_ATTRIBUTE_NUM_REGS
    return n.value


@pytest.mark.gpu
def test_register_cap_reaches_the_build(poison_empty):
    """The default cap (``registers=200``, ``__maxnreg__``) is what the built kernel uses; ``registers=0`` keeps
    ``__launch_bounds__``'s (255 for 2 blocks of 4 warps); blocks alone on a multiprocessor (D = 256) take no cap
    unless asked; results agree."""
    query, prefix, _, _ = make_case(1, 2, 4, 2048, 0, 128, 64, torch.bfloat16, "mean", None, seed=3)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    for form in (prefix, SparKPages.from_compressed(prefix)):
        capped, bounds = cuda.SplitPlan(query, form, 0.1), cuda.SplitPlan(query, form, 0.1, registers=0)
        assert "MAXNREG" not in bounds.defines and capped.defines["MAXNREG"] == cuda.DEFAULTS["registers"]
        assert _registers(capped) <= cuda.DEFAULTS["registers"] < _registers(bounds)
        assert rel_err(cuda.decode_attn_cuda(query, form, 0.1), ref) < 1e-2
        assert rel_err(cuda.decode_attn_cuda(query, form, 0.1, registers=0), ref) < 1e-2
    # D = 256: one block of 4 warps fills a multiprocessor's shared memory on sm_80 / sm_90.
    _, wide, _, _ = make_case(1, 8, 2, 8192, 0, 256, 128, torch.bfloat16, "mean", None, seed=4)
    p, d, why = cuda.launch_params(wide, 2, torch.bfloat16)
    assert why is None and p["registers"] == 0 and "MAXNREG" not in d
    p, d, _ = cuda.launch_params(wide, 2, torch.bfloat16, registers=200)
    assert p["registers"] == d["MAXNREG"] == 200


@pytest.mark.gpu
@pytest.mark.parametrize("d, kept, group, dtype, pages", [(128, 26, 4, torch.bfloat16, True),
                                                          (128, 32, 2, torch.float16, False),
                                                          (64, 13, 3, torch.bfloat16, True)])
def test_short_kept_rows_take_one_eight_warp_block(poison_empty, d, kept, group, dtype, pages):
    """Where short_kept_block says so (λ >= 0.75, enough tokens for every multiprocessor), the default launch is one
    8-warp block with __launch_bounds__'s cap, on ragged rows, and it matches the reference."""
    query, prefix, _, _ = make_case(2, 4, group, 4500, 0, d, kept, dtype, "mean", [4500, 1777], seed=6)
    if pages:
        prefix = SparKPages.from_compressed(prefix)
    props = torch.cuda.get_device_properties(0)
    p, defines, why = cuda.launch_params(prefix, group, dtype)
    wide = cuda.shared_bytes(cuda.defines(d, kept, group, "mean", dtype, 8, 1, records=pages))
    expected = cuda.short_kept_block(d, kept, group, wide, props.shared_memory_per_block_optin, 8, 4500,
                                     props.multi_processor_count)
    assert why is None and expected == (props.multi_processor_count <= 8 * 18)  # 8 rows of 18 256-token tiles
    assert (p["warps"], p["min_blocks"]) == ((8, 1) if expected else (4, 2))
    assert "MAXNREG" not in defines or not expected
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1), ref) < 1e-2


@pytest.mark.gpu
def test_register_cap_dropped_where_it_spills_on_the_gpu(poison_empty):
    """On the device's own NVRTC: DK = 92 at D = 128 (8-byte units, KV_MODE 3, the walk) builds without a stack frame
    under the default cap, so the launch keeps it and matches the reference; a cap of 128 makes the same walk spill,
    and without_added_spills drops that one. The kept MMA on arrays at DK = 100 spills under the default cap (the CPU
    tier's NVRTC says so too), so the launch drops it there and still matches the reference."""
    from torch.cuda import _utils as cuda_utils

    query, prefix, _, _ = make_case(1, 2, 4, 1500, 0, 128, 100, torch.bfloat16, "mean", None, seed=5)
    p, d, why = cuda.launch_params(prefix, 4, torch.bfloat16)
    assert why is None and d["KEPT_MMA"] == 2 and "MAXNREG" not in d and p["registers"] == 0
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1), ref) < 1e-2
    query, prefix, _, _ = make_case(1, 2, 4, 1500, 0, 128, 92, torch.bfloat16, "mean", None, seed=5)
    p, d, why = cuda.launch_params(prefix, 4, torch.bfloat16)
    assert why is None and d["KV_MODE"] == 3 and d["MAXNREG"] == cuda.DEFAULTS["registers"]
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1), ref) < 1e-2
    major, minor = torch.cuda.get_device_capability()
    low = cuda.defines(128, 92, 4, "mean", torch.bfloat16, 4, 2, 2, 2, registers=128)
    assert "MAXNREG" not in cuda.without_added_spills(low, f"sm_{major}{minor}", cuda_utils._get_nvrtc_library())


@pytest.mark.gpu
@pytest.mark.parametrize("group, pages", [(4, True), (4, False), (8, True), (8, False), (2, False)])
def test_query_operand_shared_where_the_blocks_stay(poison_empty, group, pages):
    """On the device: at D = 128 the launcher reads the recovery MMA's query operand from shared memory (QA_SMEM) where
    the block keeps its blocks a multiprocessor, not where its 4 KB would cost one (8 query heads at DK = 64 with 4
    warps on the H200, on arrays; on pages the scales' copy, RS_SMEM, already leaves one), and the result matches the
    reference either way, ragged rows, fp16 and bf16."""
    dtype = torch.float16 if group == 2 else torch.bfloat16
    query, arrays, _, _ = make_case(3, 2, group, 1600, 0, 128, 64, dtype, "mean", [1600, 777, 33], seed=group)
    prefix = SparKPages.from_compressed(arrays) if pages else arrays
    p, d, why = cuda.launch_params(prefix, group, dtype, warps=4, min_blocks=2)
    assert why is None
    props = torch.cuda.get_device_properties(query.device)
    plain = {k: v for k, v in d.items() if k != "QA_SMEM"}
    fits = cuda.blocks_by_shared_memory(props.shared_memory_per_multiprocessor, cuda.shared_bytes(plain))
    fits_shared = cuda.blocks_by_shared_memory(props.shared_memory_per_multiprocessor, cuda.shared_bytes(plain) + 4096)
    assert ("QA_SMEM" in d) == (fits_shared >= fits)
    if group == 8 and props.shared_memory_per_multiprocessor == 233472:  # the H200's
        assert ("QA_SMEM" in d) == pages and ("RS_SMEM" in d) == pages  # arrays: it would cost a block
    ref = decode_attn_ref(query.float(), arrays, None, None, 0.1)
    out = cuda.decode_attn_cuda(query, prefix, 0.1, warps=4, min_blocks=2)
    assert torch.isfinite(out).all() and rel_err(out, ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("d, kept, group, recovery, dtype, pages", [
    (128, 64, 4, "mean", torch.bfloat16, True), (128, 26, 4, "constant", torch.float16, False),
    (64, 32, 3, "mean", torch.bfloat16, True), (256, 128, 2, "mean", torch.bfloat16, False),
    (128, 13, 1, "mean", torch.float16, True)])
def test_recovery_spread_over_the_walk_equals_it_after_the_walk(poison_empty, d, kept, group, recovery, dtype, pages):
    """On the device: with REC_SPREAD the recovery's MMAs run inside the walk's loop, the same MMAs in the same order,
    so the output is bit-equal to the build that runs them after the walk, and matches the reference; ragged rows,
    both walks (D = 256: the word list), GQ 2 / 4, both dtypes, pages and arrays."""
    query, arrays, _, _ = make_case(3, 2, group, 1600, 0, d, kept, dtype, recovery, [1600, 777, 33], seed=kept)
    prefix = SparKPages.from_compressed(arrays) if pages else arrays
    p, spread, why = cuda.launch_params(prefix, group, dtype)
    assert why is None and spread["REC_SPREAD"] == 1 and "KEPT_MMA" not in spread
    after = {k: v for k, v in spread.items() if k != "REC_SPREAD"}
    outs = []
    for defs in (spread, after):
        plan = cuda.SplitPlan(query, prefix, 0.1, _resolved=(p, defs))
        o_part, lse_part = plan.partials()
        plan.launch(o_part, lse_part)
        outs.append(combine_partials(o_part, lse_part, query))
    assert torch.equal(outs[0], outs[1])
    ref = decode_attn_ref(query.float(), arrays, None, None, 0.1)
    assert torch.isfinite(outs[0]).all() and rel_err(outs[0], ref) < 1e-2


@pytest.mark.gpu
def test_spill_report_survives_the_devices_nvrtc_cache():
    """The device's NVRTC (13.0 with torch 2.11 on the H200) caches builds across processes; a cached build comes
    back without ptxas's report. The report builds skip the cache, so the same source built twice reports twice."""
    from torch.cuda import _utils as cuda_utils

    lib = cuda_utils._get_nvrtc_library()
    major, minor = torch.cuda.get_device_capability()
    d = cuda.defines(128, 100, 4, "mean", torch.bfloat16, 4, 2, 2, 2, registers=200)
    source = cuda.kernel_source(d)
    cuda.nvrtc_compile(source, cuda.KERNEL_NAME, f"sm_{major}{minor}", lib)  # into the cache, where there is one
    for _ in range(2):
        _, log = cuda.nvrtc_build(source, cuda.KERNEL_NAME, f"sm_{major}{minor}", lib)
        assert cuda.stack_frame_bytes(log) is not None, log[-500:]


@pytest.mark.gpu
@pytest.mark.parametrize("pages", [False, True], ids=["arrays", "pages"])
def test_kept_mma_gives_way_where_its_operand_would_not_fit(poison_empty, pages):
    """D = 256: the kept MMA's A operand (8 KB a block) takes a 4-warp block past the H200's shared memory from
    DK = 216 on, where the launch walks instead (with the list where it fits); below, it takes the MMA. Both match the
    reference."""
    limit = torch.cuda.get_device_properties(0).shared_memory_per_block_optin
    for kept in (192, 224):
        query, prefix, _, _ = make_case(1, 2, 2, 900, 0, 256, kept, torch.bfloat16, "mean", [900], seed=kept)
        if pages:
            prefix = SparKPages.from_compressed(prefix)
        p, d, why = cuda.launch_params(prefix, 2, torch.bfloat16)
        mma = cuda.defines(256, kept, 2, "mean", torch.bfloat16, p["warps"], p["min_blocks"], records=pages)
        assert why is None and mma["KEPT_MMA"] == 2
        assert d.get("KEPT_MMA", 0) == (2 if cuda.shared_bytes(mma) <= limit else 0)
        ref = decode_attn_ref(query.float(), prefix, None, None, 0.06)
        assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.06), ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("kept, dtype, pages", [(128, torch.bfloat16, True), (51, torch.float16, False)])
def test_walk_list_equals_the_register_queue_on_the_gpu(poison_empty, kept, dtype, pages):
    """D = 256: the kept walk over the shared-memory word list (the default there) visits the same channels in the
    same order as the register queue, so the results are bit-equal (same split), and match the reference."""
    query, prefix, _, _ = make_case(2, 2, 2, 1300, 0, 256, kept, dtype, "mean", [1300, 417], seed=3)
    if pages:
        prefix = SparKPages.from_compressed(prefix)
    p, d, why = cuda.launch_params(prefix, 2, dtype)
    assert why is None and d.get("WALK_LIST") == 1
    queue = {k: v for k, v in d.items() if k != "WALK_LIST"}
    outs = []
    for defines in (d, queue):
        plan = cuda.SplitPlan(query, prefix, 0.07, chunk=256, _resolved=(p, defines))
        o, lse = plan.partials()
        plan.launch(o, lse)
        outs.append(combine_partials(o, lse, query))
    assert torch.equal(outs[0], outs[1])
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.07)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.07), ref) < 1e-2


def deepest_walk_sets(d: int, kept: int) -> list[list[int]]:
    """Kept-channel sets that make a walk reach its deepest word: the top walk (highest channels first) through as
    many one-bit words as the other bits leave room for, then words filled from the bottom; the same mirrored for the
    bottom walk; and a dense middle block, so that empty words sit at both ends."""
    words = num_words(d)
    sparse = min(words - 1, (32 * words - kept) // 31)
    top = [32 * w + 31 for w in range(words - sparse, words)]
    top += list(range(kept - sparse))  # the rest densely from channel 0 up
    bottom = sorted(d - 1 - c for c in top)
    start = max(0, min(d - kept, 32 * (words // 2) - kept // 2))
    return [sorted(top), bottom, list(range(start, start + kept))]


@pytest.mark.gpu
@pytest.mark.parametrize("d, kept, group", [(128, 64, 4), (128, 63, 4), (128, 90, 2), (256, 128, 8), (256, 100, 8)])
@pytest.mark.parametrize("pages", [False, True])
def test_the_queue_walk_reaches_its_deepest_word(monkeypatch, poison_empty, d, kept, group, pages):
    """The register queue keeps only the words a walk can reach (cuda.walk_depth: 3 of 4 at D = 128 and DK = 64, 6 of
    8 at D = 256 and DK = 128). Tokens whose kept channels push the top or the bottom walk to exactly that word
    (one-bit words first), or leave empty words at both ends, decode as the reference does. The kept MMA's rule is
    turned off: it takes some of these cases (DK = 90 with 2 query heads, D = 256 with 8) wherever its block fits. At
    D = 256 the queue walks with 5-8 query heads a KV head (1-4 read a word list)."""
    monkeypatch.setattr(cuda, "kept_mma", lambda head_dim, kept, group: 0)
    b, h, s = 2, 2, 700
    sets = deepest_walk_sets(d, kept)
    assert all(len(c) == kept == len(set(c)) for c in sets)
    gen = torch.Generator(device="cpu").manual_seed(kept)
    keys = 0.01 * torch.randn(b, h, s, d, generator=gen)
    big = 1.0 + torch.rand(b, h, s, d, generator=gen)
    sign = torch.where(torch.rand(b, h, s, d, generator=gen) < 0.5, -1.0, 1.0)
    for t in range(s):  # every token takes one of the sets, so each set reaches every lane of a tile
        keys[:, :, t, sets[t % len(sets)]] = (sign * big)[:, :, t, sets[t % len(sets)]]
    keys = keys.to(torch.bfloat16).cuda()
    packed = select_pack_ref(keys, torch.ones(b, h, d, device="cuda"), kept, "code", "mean")
    want = torch.zeros(s, d, dtype=torch.bool)
    for t in range(s):
        want[t, sets[t % len(sets)]] = True
    assert torch.equal(unpack_bits(packed.kept_bits, d).cpu(), want.expand(b, h, s, d))  # the sets were kept
    values = torch.randn(b, h, s, d, generator=gen).to(torch.bfloat16).cuda()
    prefix = CompressedKV(packed, values, torch.tensor([s, s - 77], dtype=torch.int32, device="cuda"))
    if pages:
        prefix = SparKPages.from_compressed(prefix)
    query = torch.randn(b, h * group, 1, d, generator=gen).to(torch.bfloat16).cuda()
    _, defines, why = cuda.launch_params(prefix, group, torch.bfloat16)
    if why is not None and "shared memory" in why:
        pytest.skip(why)
    assert why is None and not defines.get("WALK_LIST") and not defines.get("KEPT_MMA")  # the register queue
    ref = decode_attn_ref(query.float(), prefix, None, None, d ** -0.5)
    assert rel_err(cuda.decode_attn_cuda(query, prefix, d ** -0.5), ref) < 1e-2


@pytest.mark.gpu
def test_cuda_chain_packed_equals_materialised(poison_empty):
    """Attention over the packed keys (CUDA kernel) == attention over the materialised K̂ (fp32 reference)."""
    query, prefix, tail_k, tail_v = make_case(2, 2, 4, 2048, 3, 128, 26, torch.bfloat16, "mean", [2048, 1500])
    k_hat = recover_ref(prefix.keys).float()
    dense_hat = CompressedKV(DenseKeys(k_hat), prefix.values.float(), prefix.lengths)
    materialised = decode_attn_ref(query.float(), dense_hat, tail_k.float(), tail_v.float(), 0.09)
    packed = decode_attn_triton(query, prefix, tail_k, tail_v, 0.09, spark_kernel="cuda")
    assert rel_err(packed, materialised) < 1e-2


@pytest.mark.gpu
def test_cuda_kernel_refuses_what_it_does_not_support():
    query, prefix, _, _ = make_case(1, 1, 9, 64, 0, 128, 64, torch.bfloat16, "mean", None)
    assert "query heads" in cuda.supported(prefix, 9)
    with pytest.raises(ValueError, match="spark_kernel='cuda' cannot run here"):
        decode_attn_triton(query, prefix, None, None, 0.1, spark_kernel="cuda")
    # auto falls back to the Triton kernel.
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    assert rel_err(decode_attn_triton(query, prefix, None, None, 0.1), ref) < 1e-2


@pytest.mark.gpu
def test_cuda_kernel_empty_prefix_falls_back(poison_empty):
    """A SparK prefix with no tokens (only a tail to attend to) is not the CUDA kernel's case: auto takes Triton."""
    query, prefix, tail_k, tail_v = make_case(1, 2, 4, 64, 9, 128, 26, torch.bfloat16, "mean", None)
    keys = prefix.keys
    empty = CompressedKV(type(keys)(keys.kept_values[:, :, :0], keys.kept_bits[:, :, :0], 128, "mean",
                                    keys.sign_bits[:, :, :0], keys.scale[:, :, :0], keys.u),
                         prefix.values[:, :, :0], torch.zeros(1, dtype=torch.int32, device="cuda"))
    assert cuda.supported(empty, 4) == "an empty prefix"
    ref = decode_attn_ref(query.float(), empty, tail_k, tail_v, 0.1)
    assert rel_err(decode_attn_triton(query, empty, tail_k, tail_v, 0.1), ref) < 1e-2


@pytest.mark.gpu
def test_auto_takes_the_cuda_kernel_and_writes_one_set_of_partials(poison_empty):
    """auto picks the CUDA kernel for a supported SparK prefix; with a tail, both kernels fill one buffer."""
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH

    query, prefix, tail_k, tail_v = make_case(2, 2, 4, 3000, 40, 128, 26, torch.bfloat16, "mean", [3000, 10])
    ref = decode_attn_ref(query.float(), prefix, tail_k, tail_v, 0.1)
    assert rel_err(decode_attn_triton(query, prefix, tail_k, tail_v, 0.1), ref) < 1e-2
    assert LAST_LAUNCH["spark_kernel"] == "cuda" and LAST_LAUNCH["splits"] >= 1


@pytest.mark.gpu
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4], CASES[7]], ids=lambda c: f"D{c[5]}-DK{c[6]}-G{c[2]}")
def test_in_kernel_combine_equals_the_combine_kernel(case, poison_empty):
    """The kernel's last block per KV head merges the splits as the Triton combine kernel does, leaves its counters
    at zero for the next launch, and also merges partials written before it (a tail's, through decode_attn_triton)."""
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH

    query, prefix, tail_k, tail_v = make_case(*case, seed=case[3] + 2)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    for chunk in (None, 64):  # one wave of splits, and many short ones (most of a short row's splits empty)
        fused = cuda.decode_attn_cuda(query, prefix, 0.1, chunk=chunk, combine="kernel")
        separate = cuda.decode_attn_cuda(query, prefix, 0.1, chunk=chunk, combine="triton")
        assert rel_err(fused, ref) < 1e-2 and rel_err(fused, separate) < 1e-2
        torch.cuda.synchronize()
        assert all(int(c.abs().sum()) == 0 for c in cuda._COUNTERS.values())
    tail_k, tail_v = make_case(*case[:4], 6, *case[5:], seed=9)[2:]
    ref = decode_attn_ref(query.float(), prefix, tail_k, tail_v, 0.1)
    assert rel_err(decode_attn_triton(query, prefix, tail_k, tail_v, 0.1, spark_kernel="cuda"), ref) < 1e-2
    assert LAST_LAUNCH["combine"] == "cuda"


@pytest.mark.gpu
def test_in_kernel_combine_in_a_cuda_graph_and_across_batch_sizes(poison_empty):
    """Replays of a captured step (its counters are zeroed inside the graph) equal the eager step bit for bit, and
    eager steps of other batch sizes on the same stream before and after stay right (the counters are reset)."""
    small = make_case(1, 2, 4, 1500, 0, 128, 26, torch.bfloat16, "mean", None, seed=4)[:2]
    large = make_case(4, 4, 4, 900, 0, 128, 26, torch.bfloat16, "mean", [900, 1, 450, 899], seed=5)[:2]
    refs = [decode_attn_ref(q.float(), p, None, None, 0.1) for q, p in (small, large)]
    eager = cuda.decode_attn_cuda(*small, 0.1, combine="kernel")
    assert rel_err(eager, refs[0]) < 1e-2
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cuda.decode_attn_cuda(*small, 0.1, combine="kernel")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = cuda.decode_attn_cuda(*small, 0.1, combine="kernel")
    for _ in range(3):
        captured.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, eager)
        assert rel_err(cuda.decode_attn_cuda(*large, 0.1, combine="kernel"), refs[1]) < 1e-2
        assert torch.equal(cuda.decode_attn_cuda(*small, 0.1, combine="kernel"), eager)
    # A captured step of the front end takes the combine kernel (free to launch in a graph, faster on the GPU).
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH

    separate = cuda.decode_attn_cuda(*small, 0.1, combine="triton")  # compiles the combine kernel outside capture
    with torch.cuda.graph(graph := torch.cuda.CUDAGraph()):
        captured = decode_attn_triton(*small, None, None, 0.1, spark_kernel="cuda")
    assert LAST_LAUNCH["combine"] == "triton"
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, separate)


@pytest.mark.gpu
def test_combine_kernel_takes_over_when_the_partials_do_not_fit(monkeypatch, poison_empty):
    from sparkv.kernels.decode_attn.fused import LAST_LAUNCH

    query, prefix, tail_k, tail_v = make_case(*CASES[1], seed=11)
    monkeypatch.setattr(cuda.SplitPlan, "can_combine", lambda self, slots: False)
    ref = decode_attn_ref(query.float(), prefix, tail_k, tail_v, 0.1)
    assert rel_err(decode_attn_triton(query, prefix, tail_k, tail_v, 0.1, spark_kernel="cuda"), ref) < 1e-2
    assert LAST_LAUNCH["combine"] == "triton"
    assert rel_err(cuda.decode_attn_cuda(query, prefix, 0.1), decode_attn_ref(query.float(), prefix, None, None,
                                                                             0.1)) < 1e-2


@pytest.mark.gpu
def test_nvrtc_failure_falls_back_once_with_a_warning(monkeypatch, poison_empty):
    from sparkv.kernels.decode_attn import fused

    query, prefix, _, _ = make_case(1, 2, 4, 500, 0, 128, 40, torch.bfloat16, "mean", None)
    monkeypatch.setattr(cuda, "_COMPILED", {})
    monkeypatch.setattr(cuda, "_FAILED", {})
    monkeypatch.setattr(cuda, "_PLANS", {})
    monkeypatch.setattr(fused, "_CUDA_FAILED", {})

    def no_nvrtc(*a, **k):
        raise OSError("libnvrtc.so: cannot open shared object file")

    monkeypatch.setattr(cuda, "_kernel", no_nvrtc)
    ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
    with pytest.warns(UserWarning, match="CUDA SparK kernel is unavailable"):
        assert rel_err(decode_attn_triton(query, prefix, None, None, 0.1), ref) < 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second step neither warns nor retries the build
        assert rel_err(decode_attn_triton(query, prefix, None, None, 0.1), ref) < 1e-2
    with pytest.raises(ValueError, match="cannot run here: NVRTC build failed"):
        decode_attn_triton(query, prefix, None, None, 0.1, spark_kernel="cuda")


@pytest.mark.gpu
def test_pages_merge_in_kernel_and_replay_in_a_cuda_graph(poison_empty):
    """Pages through every merge (the kernel's own, the combine kernel, a tail's partials first) and in a captured
    step, bit-equal to the same kernel over the arrays (same splits, same numbers read)."""
    query, arrays, tail_k, tail_v = make_case(2, 2, 4, 1500, 5, 128, 26, torch.bfloat16, "mean", [1500, 700], seed=6)
    pages = SparKPages.from_compressed(arrays)
    for combine in ("kernel", "triton"):
        for chunk in (None, 64):
            assert torch.equal(cuda.decode_attn_cuda(query, pages, 0.1, chunk=chunk, combine=combine),
                               cuda.decode_attn_cuda(query, arrays, 0.1, chunk=chunk, combine=combine))
    eager = decode_attn_triton(query, pages, tail_k, tail_v, 0.1, spark_kernel="cuda")
    assert torch.equal(eager, decode_attn_triton(query, arrays, tail_k, tail_v, 0.1, spark_kernel="cuda"))
    assert rel_err(eager, decode_attn_ref(query.float(), pages, tail_k, tail_v, 0.1)) < 1e-2
    separate = cuda.decode_attn_cuda(query, pages, 0.1, combine="triton")
    with torch.cuda.graph(graph := torch.cuda.CUDAGraph()):
        captured = decode_attn_triton(query, pages, None, None, 0.1, spark_kernel="cuda")
    for _ in range(2):
        captured.zero_()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, separate)


@pytest.mark.gpu
def test_pages_are_kept_only_where_the_cuda_kernel_decodes(monkeypatch):
    """decode_storage: pages for a case the CUDA kernel takes, the arrays themselves otherwise (PyTorch backend, the
    Triton kernel chosen, a case the kernel does not support); pages forced onto the Triton kernel are unpacked
    every call, with one warning, and give the arrays' answer."""
    from sparkv.kernels.decode_attn import decode_storage, fused

    query, arrays, _, _ = make_case(1, 2, 4, 600, 0, 128, 40, torch.bfloat16, "mean", None)
    pages = decode_storage(arrays, 8)
    assert isinstance(pages, SparKPages) and pages.nbytes() == pages.allocated_bytes()
    assert decode_storage(arrays, 8, backend="torch") is arrays
    assert decode_storage(arrays, 18) is arrays  # 9 query heads per KV head
    dense = CompressedKV(DenseKeys(arrays.values), arrays.values, arrays.lengths)
    assert decode_storage(dense, 8) is dense
    monkeypatch.setenv("SPARKV_SPARK_KERNEL", "triton")
    assert decode_storage(arrays, 8) is arrays
    monkeypatch.setattr(fused, "_PAGES_UNPACKED", set())
    tri = decode_attn_triton(query, arrays, None, None, 0.1)
    with pytest.warns(UserWarning, match="every step unpacks it"):
        assert torch.equal(decode_attn_triton(query, pages, None, None, 0.1), tri)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device
        assert torch.equal(decode_attn_triton(query, pages, None, None, 0.1), tri)


@pytest.mark.gpu
def test_launch_parameters_are_checked():
    query, prefix, _, _ = make_case(1, 2, 4, 300, 0, 128, 64, torch.bfloat16, "mean", None)
    with pytest.raises(TypeError, match="unknown CUDA kernel parameters"):
        cuda.decode_attn_cuda(query, prefix, 0.1, threads=128)
    with pytest.raises(ValueError, match=r"warps must be an integer in \[1, 8\], got 9"):
        cuda.decode_attn_cuda(query, prefix, 0.1, warps=9)
    with pytest.raises(ValueError, match="chunk must be a positive multiple of 32"):
        cuda.decode_attn_cuda(query, prefix, 0.1, chunk=33)
    with pytest.raises(ValueError, match="combine must be 'auto', 'kernel' or 'triton'"):
        cuda.decode_attn_cuda(query, prefix, 0.1, combine="cuda")


def test_spark_kernel_choice_is_validated(monkeypatch):
    """A bad choice is refused on every path (here the interpreter's), as is 'cuda' where no GPU kernel can run."""
    query, prefix, tail_k, tail_v = make_interpreter_case()
    monkeypatch.setenv("SPARKV_SPARK_KERNEL", "fast")
    with pytest.raises(ValueError, match="SPARKV_SPARK_KERNEL must be one of auto, cuda, triton"):
        decode_attn_triton(query, prefix, tail_k, tail_v, 0.1)
    monkeypatch.delenv("SPARKV_SPARK_KERNEL")
    with pytest.raises(ValueError, match="spark_kernel / SPARKV_SPARK_KERNEL must be one of"):
        decode_attn_triton(query, None, tail_k, tail_v, 0.1, spark_kernel="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="spark_kernel='cuda' needs a GPU"):
            decode_attn_triton(query, prefix, tail_k, tail_v, 0.1, spark_kernel="cuda")


def make_interpreter_case():
    gen = torch.Generator().manual_seed(3)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    keys = torch.randn(1, 1, 40, 64, generator=gen).bfloat16().to(dev)
    packed = select_pack_ref(keys, (torch.rand(1, 1, 64, generator=gen) + 0.1).to(dev), 32, "code", "mean")
    prefix = CompressedKV(packed, torch.randn(1, 1, 40, 64, generator=gen).bfloat16().to(dev),
                          torch.tensor([40], dtype=torch.int32, device=dev))
    tail = torch.randn(1, 1, 3, 64, generator=gen).bfloat16().to(dev)
    return torch.randn(1, 2, 1, 64, generator=gen).bfloat16().to(dev), prefix, tail, tail.clone()


# --- CPU tier: NVRTC compile of every variant -----------------------------------------------------------------

def _pip_nvrtc() -> ctypes.CDLL:
    lib = cuda.pip_nvrtc()
    if lib is None:
        pytest.skip("no NVRTC: the nvidia-cuda-nvrtc wheel is not installed (pip install -e '.[test]')")
    return lib


VARIANTS = [
    # (D, DK, G, recovery, dtype, warps, min_blocks, chains, stages, registers): every KV_MODE, recovery, dtype,
    # GQ 2 / 4 / 8, chain count, stage count, and both register caps (__maxnreg__, __launch_bounds__)
    (128, 64, 4, "mean", torch.bfloat16, 4, 2, 2, 1, 200),
    (128, 26, 4, "mean", torch.bfloat16, 4, 2, 1, 2, 0),
    (64, 13, 3, "constant", torch.float16, 4, 2, 2, 2, 200),
    (64, 32, 8, "zero", torch.bfloat16, 2, 4, 2, 1, 0),
    (256, 77, 2, "mean", torch.float16, 4, 1, 2, 2, 200),
    (128, 25, 8, "mean", torch.bfloat16, 4, 3, 2, 1, 0),
    (128, 40, 4, "zero", torch.bfloat16, 8, 1, 2, 2, 0),
    (128, 40, 4, "constant", torch.bfloat16, 4, 2, 2, 1, 200),
    (128, 52, 4, "mean", torch.bfloat16, 4, 2, 2, 2, 200),
    (64, 20, 3, "zero", torch.float16, 4, 2, 1, 1, 0),
    (256, 26, 4, "mean", torch.bfloat16, 8, 1, 2, 2, 0),   # D = 256 in an 8-warp block: the register queue walk
    (256, 128, 3, "zero", torch.bfloat16, 2, 1, 2, 1, 0),  # and in 2-warp blocks: the list walk
    (128, 26, 2, "mean", torch.float16, 4, 2, 2, 2, 200),  # GQ = 2
    (64, 16, 3, "mean", torch.float16, 4, 2, 2, 2, 200),   # kept rows of 2 swizzled chunks
    (128, 48, 4, "mean", torch.bfloat16, 4, 2, 2, 2, 200),  # and of 6, padded
    (64, 20, 1, "zero", torch.bfloat16, 4, 2, 1, 1, 0),
    (128, 64, 8, "mean", torch.float16, 4, 2, 2, 2, 200),  # the kept term on the tensor cores (KEPT_MMA)
    (128, 8, 5, "zero", torch.bfloat16, 8, 1, 2, 1, 0),
    (128, 77, 4, "mean", torch.bfloat16, 4, 2, 2, 2, 200),  # KEPT_MMA 2: odd DK
    (128, 96, 2, "constant", torch.float16, 4, 2, 1, 1, 200),  # 12 chunks a row, unpadded, GQ = 2
    (128, 90, 8, "zero", torch.bfloat16, 8, 1, 2, 2, 0),  # 4-byte words, 8 query heads a KV head
    (256, 192, 2, "mean", torch.bfloat16, 4, 1, 2, 2, 200),  # D = 256, two bitmap words a quarter
    (128, 84, 4, "mean", torch.bfloat16, 4, 2, 2, 2, 200),  # the walk with the recovery after it (no REC_SPREAD)
    (64, 40, 3, "constant", torch.float16, 4, 2, 1, 1, 0),  # the same at D = 64, one walk
]


def test_two_q_table_columns_for_one_or_two_query_heads():
    """1-2 query heads a KV head use a 2-column q table (16 copies a row) at every head_dim (at D = 256 since
    BENCHMARKS.md "Session 32": 1.06-1.21x there)."""
    def gq(head_dim, group):
        return cuda.defines(head_dim, head_dim // 4, group, "mean", torch.bfloat16)["GQ"]

    assert [gq(64, g) for g in (1, 2, 3, 4, 5, 8)] == [2, 2, 4, 4, 8, 8]
    assert [gq(128, g) for g in (1, 2, 3)] == [2, 2, 4]
    assert [gq(256, g) for g in (1, 2, 3, 5)] == [2, 2, 4, 8]
    # the q table is D rows of 16 copies x 2 columns or 8 copies x 4 columns: the same 512 bytes a channel
    two, four = (cuda.defines(128, 32, g, "mean", torch.bfloat16) for g in (2, 3))
    assert cuda.shared_bytes(two) - cuda.shared_bytes(four) == 4 * (2 - 4) * 32 * 4  # only the score buffers differ


def words_each_walk_needs(counts: torch.Tensor, bits: int, top: bool) -> torch.Tensor:
    """Nonempty words a walk visits to take ``bits`` kept bits, given each token's kept bits per word ``[N, NW]``
    (word 0 = channels 0-31; the top walk starts at the last word)."""
    c = counts.flip(-1) if top else counts
    before = c.cumsum(-1) - c  # bits in the words before each word
    return ((c > 0) & (before < bits)).sum(-1)


@pytest.mark.parametrize("words", [2, 4])
def test_walk_depth_holds_every_bitmap(words):
    """cuda.walk_depth, the words each walk's register queue keeps, bounds the words a walk needs over every split of
    DK kept bits into bitmap words (all of them, at D = 64 and 128), and is reached wherever a walk takes enough bits
    to need that many words; chains=1 keeps every word."""
    counts = torch.cartesian_prod(*[torch.arange(33)] * words).reshape(-1, words)
    total = counts.sum(-1)
    for kept in range(1, 32 * words):
        c = counts[total == kept]
        bottom = kept // 2
        for bits, other, top in ((kept - bottom, bottom, True), (bottom, kept - bottom, False)):
            need = int(words_each_walk_needs(c, bits, top).max()) if bits else 0
            assert need <= cuda.walk_depth(words, other), (kept, top)
            assert need == min(cuda.walk_depth(words, other), bits), (kept, top)
    d = cuda.defines(32 * words, 16 * words, 4, "mean", torch.bfloat16)  # λ = 0.5
    assert (d["DEPTH_TOP"], d["DEPTH_BOT"]) == ((2, 2) if words == 2 else (3, 3))
    one = cuda.defines(32 * words, 16 * words, 4, "mean", torch.bfloat16, chains=1)
    assert one["DEPTH_TOP"] == words


def test_swizzled_rows_start_on_128_byte_lines():
    """Swizzled kept rows (KV_MODE 2, a power-of-two number of 16-byte chunks) address a chunk by XOR within 128
    bytes of the row's start (spark_walk.cu, KV_CHUNK), which needs every stage of small arrays on a 128-byte line;
    256 bytes is not given (1-warp blocks at D = 256), so rows of 16 chunks must not XOR across 128-byte groups."""
    off_256 = set()
    for d, kept in ((64, 16), (64, 32), (128, 64), (256, 128)):
        for group in (1, 2, 4, 8):
            for warps in (1, 2, 4, 8):
                for stages in (1, 2):
                    for records in (False, True):
                        defs = cuda.defines(d, kept, group, "mean", torch.bfloat16, warps, 1, 2, stages,
                                            records=records, registers=0)
                        assert defs["KV_MODE"] == 2
                        fixed = cuda._fixed_bytes(defs)
                        per_warp = (cuda.shared_bytes(defs) - fixed) // warps
                        small = (per_warp - 32 * d * 2) // stages
                        starts = [fixed + w * per_warp + 32 * d * 2 + s * small
                                  for w in range(warps) for s in range(stages)]
                        assert all(x % 128 == 0 for x in starts), (d, kept, group, warps, stages)
                        off_256 |= {x % 256 for x in starts if d == 256}
    assert off_256 == {0, 128}  # why KV_CHUNK adds whole 128-byte groups after the XOR


def test_tensor_cores_take_the_kept_term_where_the_walk_costs_more():
    """KEPT_MMA (cuda.kept_mma) where the H200's A/Bs had it faster than the walk (BENCHMARKS.md "Session 26",
    "Session 27"): mode 1 (A in registers, a table) with 5-8 query heads a KV head at D = 128 and DK % 8 == 0; mode 2
    (A in shared memory, selectors computed) there at other DK from 21 ("Session 33"), with 1-4 from DK = 65
    ("Session 31": the even DK of 66-94 too, once the scales were copied), at D = 256 with 1-4 from DK = 129 (the
    walk's list then goes) and with 5-8 at every DK, and at D = 64 with 3-4 from DK = 33, with 1-2 from DK = 41, with
    5-8 at every DK ("Session 32")."""
    def d(head_dim, kept, group, warps=4, **kw):
        return cuda.defines(head_dim, kept, group, "mean", torch.bfloat16, warps, 1, **kw)

    def mode(head_dim, kept, group):
        return d(head_dim, kept, group).get("KEPT_MMA", 0)

    for group in (5, 6, 7, 8):
        for kept in (8, 40, 64, 128):
            assert d(128, kept, group).get("KEPT_MMA") == 1 and d(128, kept, group, warps=8).get("KEPT_MMA") == 1
        assert [mode(128, kept, group) for kept in (13, 20, 21, 26, 39, 41, 52, 63, 90)] == [0, 0] + [2] * 7
    for group in (1, 2, 3, 4):
        kept = (26, 63, 64, 65, 77, 80, 90, 94, 95, 96, 100, 128)
        assert [mode(128, k, group) for k in kept] == [0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2]
        assert [mode(256, k, group) for k in (64, 128, 129, 144, 192)] == [0, 0, 2, 2, 2]
        expected = [0, 0, 2, 2, 2, 2] if group >= 3 else [0, 0, 0, 0, 2, 2]
        assert [mode(64, k, group) for k in (13, 32, 33, 40, 41, 63)] == expected
    for group in (5, 6, 7, 8):
        assert [mode(64, k, group) for k in (1, 13, 26, 32, 40, 48, 63)] == [2] * 7
        assert [mode(256, k, group) for k in (1, 32, 64, 128, 136)] == [2] * 5
    assert "WALK_LIST" not in d(256, 192, 4) and d(256, 128, 4)["WALK_LIST"] == 1
    assert d(256, 192, 4, kept_on_tensor_cores=False)["WALK_LIST"] == 1
    assert "KEPT_MMA" not in d(128, 96, 4, kept_on_tensor_cores=False)
    assert "KEPT_MMA" not in d(128, 64, 8, kept_on_tensor_cores=False)

    def without(defs):
        return {k: v for k, v in defs.items() if k != "KEPT_MMA"}

    # Mode 1, 8 chunks a row: swizzled and unpadded for the walk, padded to 9 for the MMA's plain addresses; plus the
    # table.
    mma = d(128, 64, 8)
    walk = without(mma)
    per_warp_stages = walk["WARPS"] * walk["STAGES"] * 32 * 16
    assert cuda.shared_bytes(mma) - cuda.shared_bytes(walk) == 256 + per_warp_stages
    # Mode 2: the A operand, [KS][32] of 16 bytes; 12 chunks a row: padded to 13 for the walk, not for the MMA.
    mma = d(128, 96, 4)
    assert cuda.shared_bytes(mma) - cuda.shared_bytes(without(mma)) == 8 * 32 * 16 - per_warp_stages
    mma = d(128, 77, 4)  # odd DK: the tile's bytes as they are, for both
    assert cuda.shared_bytes(mma) - cuda.shared_bytes(without(mma)) == 8 * 32 * 16


def test_recovery_spreads_over_the_walk_where_a_token_keeps_at_most_half():
    """REC_SPREAD (the recovery's MMAs inside the walk's loop) where the H200's A/Bs had it faster (BENCHMARKS.md
    "Session 29": 1.02-1.10x with at most half of the channels kept, 0.98-0.99x with 80 and 90 of 128): the walk at
    DK <= D / 2 with a recovery that has MMAs (mean, constant); never with the kept MMA nor the zero recovery. It takes
    no shared memory."""
    def d(head_dim, kept, group, recovery="mean", **kw):
        return cuda.defines(head_dim, kept, group, recovery, torch.bfloat16, 4, 2, **kw)

    assert [d(128, k, 4).get("REC_SPREAD", 0) for k in (8, 26, 63, 64, 66, 80, 90)] == [1, 1, 1, 1, 0, 0, 0]
    assert [d(64, k, 3).get("REC_SPREAD", 0) for k in (13, 32, 33, 48)] == [1, 1, 0, 0]
    assert d(256, 128, 2)["REC_SPREAD"] == 1 and "REC_SPREAD" not in d(256, 130, 2)
    assert d(128, 64, 4, "constant")["REC_SPREAD"] == 1 and "REC_SPREAD" not in d(128, 64, 4, "zero")
    assert "REC_SPREAD" not in d(128, 64, 8) and d(128, 64, 8, kept_on_tensor_cores=False)["REC_SPREAD"] == 1
    spread = d(128, 64, 4, records=True)
    assert cuda.shared_bytes(spread) == cuda.shared_bytes({k: v for k, v in spread.items() if k != "REC_SPREAD"})


def test_scales_are_copied_with_the_small_arrays_only_where_the_tensor_cores_take_the_kept_term():
    """RS_SMEM: on pages with per-token scales (mean recoveries) with KEPT_MMA, 128 bytes a stage more; never with the
    walk (its build stays as measured), on arrays, or without scales (zero and constant recoveries)."""
    def d(kept, group, recovery="mean", records=True, head_dim=128):
        return cuda.defines(head_dim, kept, group, recovery, torch.bfloat16, 4, 2, records=records, registers=200)

    for kept, group in ((77, 4), (96, 4), (64, 8), (52, 8)):
        on = d(kept, group)
        assert on["KEPT_MMA"] and on["RS_SMEM"] == 1
        off = {k: v for k, v in on.items() if k != "RS_SMEM"}
        assert cuda.shared_bytes(on) == cuda.shared_bytes(off) + 2 * 4 * 128  # two stages, four warps
    assert "RS_SMEM" not in d(192, 2, head_dim=256, records=False) and d(192, 2, head_dim=256)["RS_SMEM"] == 1
    for kept, group, recovery, records in ((64, 4, "mean", True), (26, 4, "mean", True), (77, 4, "mean", False),
                                           (77, 4, "zero", True), (64, 8, "constant", True)):
        assert "RS_SMEM" not in d(kept, group, recovery, records), (kept, group, recovery, records)
    assert "KEPT_MMA" not in d(64, 4) and "KEPT_MMA" in d(64, 8, "constant")


@pytest.mark.parametrize("head_dim, kept, group, arch", [(128, 77, 4, "sm_90"), (128, 64, 8, "sm_90"),
                                                         (256, 192, 2, "sm_80"), (128, 52, 8, "sm_80")])
def test_cuda_source_compiles_with_the_scales_copied(head_dim, kept, group, arch):
    """RS_SMEM builds (KEPT_MMA 1 and 2, D = 128 and 256): the build's own static_asserts check shared_bytes' count
    and the scales' 16-byte alignment in the tile record."""
    defines = cuda.defines(head_dim, kept, group, "mean", torch.float16, 4, 1, records=True)
    assert defines["RS_SMEM"] == 1
    cubin = cuda.nvrtc_compile(cuda.kernel_source(defines), cuda.KERNEL_NAME, arch, _pip_nvrtc())
    assert cubin[:4] == b"\x7fELF"


def test_kept_mma_gives_way_to_the_walk_where_its_operand_would_not_fit():
    """defines_within: at D = 256 the kept MMA's A operand (8 KB) takes a 4-warp block past the H200's 232,448 bytes
    from DK = 211, where the walk fits (without its list); below, the MMA stays. Where neither fits (DK = 224: the
    walk pads its 28-chunk rows) the defines are left for the launcher to report or shrink."""
    h200 = 232448

    def within(kept, limit=h200):
        return cuda.defines_within(limit, 256, kept, 2, "mean", torch.bfloat16, 4, 1, records=True)

    assert within(210)["KEPT_MMA"] == 2 and cuda.shared_bytes(within(210)) <= h200
    # Its scales' copy (RS_SMEM, 1 KB a block) goes first: kept to DK = 208, dropped from 209 on, where the MMA stays.
    assert within(208)["RS_SMEM"] == 1 and "RS_SMEM" not in within(209)
    assert "KEPT_MMA" not in within(211)
    walk = within(216)
    assert "KEPT_MMA" not in walk and "WALK_LIST" not in walk and cuda.shared_bytes(walk) <= h200
    mma = cuda.defines(256, 216, 2, "mean", torch.bfloat16, 4, 1, records=True)
    assert mma["KEPT_MMA"] == 2 and cuda.shared_bytes(mma) > h200
    assert cuda.shared_bytes(within(224)) > h200
    assert within(192, limit=10**6) == cuda.defines(256, 192, 2, "mean", torch.bfloat16, 4, 1, records=True)
    # With 8 query heads a KV head (the MMA at every DK): kept to DK = 136, the walk from 144.
    eight = [cuda.defines_within(h200, 256, k, 8, "mean", torch.bfloat16, 4, 1, records=True) for k in (64, 136, 144)]
    assert [x.get("KEPT_MMA", 0) for x in eight] == [2, 2, 0] and cuda.shared_bytes(eight[1]) <= h200


def test_walk_list_only_at_d256_outside_eight_warp_blocks():
    """The kept walk reads its words from a shared-memory list at D = 256 (2.3 KB a warp), except in 8-warp blocks and
    with more than 4 query heads a KV head, where the list would change the blocks that fit (BENCHMARKS.md "Session
    21")."""
    def d(head_dim, warps):
        return cuda.defines(head_dim, head_dim // 5, 4, "mean", torch.bfloat16, warps, 1)

    assert d(256, 4).get("WALK_LIST") == 1 and d(256, 2).get("WALK_LIST") == 1
    assert d(256, 6).get("WALK_LIST") == 1 and d(256, 7).get("WALK_LIST") == 1  # wide_lone_block's
    assert "WALK_LIST" not in d(256, 8) and "WALK_LIST" not in d(128, 4) and "WALK_LIST" not in d(64, 4)
    assert "WALK_LIST" not in cuda.defines(256, 128, 8, "mean", torch.bfloat16, 4, 1)  # 8 q-table columns
    assert cuda.shared_bytes(d(256, 4)) - cuda.shared_bytes({**d(256, 4), "WALK_LIST": 0}) == 4 * 32 * 9 * 8
    # Where the list alone would take the block past the device's limit, the launch walks the register queue.
    low = cuda.defines(256, 208, 4, "mean", torch.bfloat16, 4, 1,  # λ = 0.19: 237,056 bytes with the list
                       kept_on_tensor_cores=False)
    h200 = 232448
    assert cuda.shared_bytes(low) > h200 >= cuda.shared_bytes(cuda.without_walk_list_beyond(low, h200))
    assert "WALK_LIST" not in cuda.without_walk_list_beyond(low, h200)
    assert cuda.without_walk_list_beyond(d(256, 4), h200) == d(256, 4)
    tiny = cuda.without_walk_list_beyond(low, 1000)  # fits neither way: left as it is, for the launcher to report
    assert tiny == low


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["-".join(str(x) for x in v if not isinstance(x, torch.dtype))
                                                  for v in VARIANTS])
@pytest.mark.parametrize("records", [False, True], ids=["arrays", "pages"])
def test_cuda_source_compiles(variant, arch, records):
    defines = cuda.defines(*variant[:-1], records=records, registers=variant[-1])
    assert ("MAXNREG" in defines) == (0 < variant[-1] < cuda.implied_registers(variant[5], variant[6]))
    # EXPECT_SMEM (set by default): the source static_asserts that cuda.shared_bytes() describes its layout.
    source = cuda.kernel_source(defines)
    assert f"#define EXPECT_SMEM {cuda.shared_bytes(defines)}\n" in source
    cubin = cuda.nvrtc_compile(source, cuda.KERNEL_NAME, arch, _pip_nvrtc())
    assert cubin[:4] == b"\x7fELF" and cuda.KERNEL_NAME.encode() in cubin
    with pytest.raises(RuntimeError, match="shared_bytes"):
        cuda.nvrtc_compile(cuda.kernel_source({**defines, "EXPECT_SMEM": cuda.shared_bytes(defines) + 16}),
                           cuda.KERNEL_NAME, arch, _pip_nvrtc())


QUERY_SHARED_VARIANTS = [v for v in VARIANTS if v[0] == 128]  # QA_SMEM: D = 128 only (with_query_operand_shared)


@pytest.mark.parametrize("index", range(len(QUERY_SHARED_VARIANTS)), ids=[
    "-".join(str(x) for x in v if not isinstance(x, torch.dtype)) for v in QUERY_SHARED_VARIANTS])
def test_cuda_source_compiles_with_the_query_operand_shared(index):
    """Every D = 128 variant (walk, KEPT_MMA 1 and 2, GQ 2 / 4 / 8, both dtypes) with QA_SMEM, pages and arrays in
    turn, sm_90 and sm_80 in turn: the build's own static_assert checks shared_bytes' count of its 4 KB."""
    variant = QUERY_SHARED_VARIANTS[index]
    plain = cuda.defines(*variant[:-1], records=index % 2 == 0, registers=variant[-1])
    defines = cuda.with_query_operand_shared(plain, 232448, 0)
    assert defines == {**plain, "QA_SMEM": 1}
    assert cuda.shared_bytes(defines) == cuda.shared_bytes(plain) + 4096
    arch = ("sm_90", "sm_80")[index // 2 % 2]
    cubin = cuda.nvrtc_compile(cuda.kernel_source(defines), cuda.KERNEL_NAME, arch, _pip_nvrtc())
    assert cubin[:4] == b"\x7fELF"


def test_query_operand_is_shared_at_d128_where_the_blocks_a_multiprocessor_stay():
    """with_query_operand_shared on the H200's limits (232,448 bytes a block, 233,472 a multiprocessor): on where two
    4-warp blocks still fit (the targets' λ = 0.5 build), off where its 4 KB would leave one (8 query heads at DK = 64
    on arrays, 115,456 bytes a block), off past the block limit, and never at D = 64 or 256 (measured slower there)."""
    block, sm = 232448, 233472
    at = dict(records=True, registers=200)
    g4 = cuda.defines(128, 64, 4, "mean", torch.bfloat16, 4, 2, 2, 2, **at)
    assert cuda.with_query_operand_shared(g4, block, sm) == {**g4, "QA_SMEM": 1}
    g8 = cuda.defines(128, 64, 8, "mean", torch.bfloat16, 4, 2, 2, 2, records=False, registers=200)
    assert cuda.shared_bytes(g8) == 115456 and sm // (cuda.shared_bytes(g8) + 1024) == 2
    assert cuda.with_query_operand_shared(g8, block, sm) == g8
    assert cuda.with_query_operand_shared(g8, block, 0) == {**g8, "QA_SMEM": 1}  # multiprocessor unknown: not checked
    assert cuda.with_query_operand_shared(g4, cuda.shared_bytes(g4) + 4095, 0) == g4
    for head_dim, kept in ((64, 32), (256, 128)):
        d = cuda.defines(head_dim, kept, 4, "mean", torch.bfloat16, 4, 1, 2, 2, **at)
        assert cuda.with_query_operand_shared(d, block, 0) == d


def test_the_report_build_skips_nvrtcs_cache():
    """NVRTC 12.9+ returns a cached build without running ptxas, so without its report; the spill check's builds skip
    the cache (the device's NVRTC cached across processes: session 28), the launcher's own builds keep it."""
    lib = _pip_nvrtc()
    assert cuda.nvrtc_version(lib) >= (12, 9)  # the test extras' NVRTC (13.x): the option applies
    report = cuda.nvrtc_options("sm_90", lib, report=True)
    assert b"-Xptxas=-v" in report and b"--no-cache" in report
    assert not {b"-Xptxas=-v", b"--no-cache"} & set(cuda.nvrtc_options("sm_90", lib, report=False))
    d = cuda.defines(128, 100, 4, "mean", torch.bfloat16, 4, 2, 2, 2, registers=200)
    for _ in range(2):  # the second build of the same source still reports (NVRTC accepts the option)
        _, log = cuda.nvrtc_build(cuda.kernel_source(d), cuda.KERNEL_NAME, "sm_90", lib)
        assert cuda.stack_frame_bytes(log) is not None


def test_stack_frame_is_read_from_the_ptxas_report():
    log = ("ptxas info    : Function properties for combine_if_last\nptxas         .     8 bytes stack frame, 0 bytes "
           "spill stores\nptxas info    : Function properties for spark_walk_split\nptxas         .     224 bytes "
           "stack frame, 220 bytes spill stores, 220 bytes spill loads\n")
    assert cuda.stack_frame_bytes(log) == 224
    assert cuda.stack_frame_bytes("ptxas info    : Used 200 registers") is None


@pytest.mark.parametrize("head_dim, kept, records, registers, keeps_cap, tensor_cores", [
    (128, 64, True, 200, True, True),     # λ = 0.5: the cap changes only the schedule (measured 1.01-1.18x)
    (128, 26, True, 200, True, True),     # λ = 0.8: the build uses fewer registers than the cap anyway
    (128, 52, True, 200, True, True),     # pages at DK = 52: 8-byte units, no stack frame (4-byte words: 48 bytes)
    (128, 100, False, 200, True, False),  # the walk at DK = 100: likewise (4-byte words: 224 bytes capped against 16)
    (128, 100, False, 128, False, False),  # a cap of 128 there: 32 bytes of stack frame against none uncapped
    (128, 96, True, 200, True, True),     # the kept MMA (KEPT_MMA 2) on pages fits the cap
    (128, 100, False, 200, False, True),  # and spills under it on arrays
])
def test_register_cap_is_dropped_where_it_adds_spills(head_dim, kept, records, registers, keeps_cap, tensor_cores):
    """The launcher keeps a register cap only where ptxas reports no larger stack frame than without it (sm_90, the
    pip NVRTC; on a GPU launch_params asks the device's own NVRTC the same question)."""
    lib = _pip_nvrtc()
    d = cuda.defines(head_dim, kept, 4, "mean", torch.bfloat16, 4, 2, 2, 2, records=records, registers=registers,
                     kept_on_tensor_cores=tensor_cores)
    assert ("KEPT_MMA" in d) == (tensor_cores and kept >= 96)
    assert d["MAXNREG"] == registers
    kept_d = cuda.without_added_spills(d, "sm_90", lib)
    assert ("MAXNREG" in kept_d) == keeps_cap
    key = (tuple(sorted(kept_d.items())), "sm_90")
    assert cuda._UNLOADED[key][:4] == b"\x7fELF"  # the checked build is the one the kernel will load
    uncapped_key = (tuple(sorted((k, v) for k, v in d.items() if k != "MAXNREG")), "sm_90")
    assert (uncapped_key in cuda._STACKS) == (cuda._STACKS[(tuple(sorted(d.items())), "sm_90")] > 0)
    if not keeps_cap:
        assert (tuple(sorted(d.items())), "sm_90") not in cuda._UNLOADED  # the dropped build is not held
    assert {k: v for k, v in kept_d.items() if k != "MAXNREG"} == {k: v for k, v in d.items() if k != "MAXNREG"}


def test_launch_parameters_are_checked_before_anything_runs():
    _, prefix, _, _ = make_interpreter_case()
    with pytest.raises(TypeError, match="unknown CUDA kernel parameters"):
        cuda.launch_params(prefix, 2, torch.bfloat16, threads=128)
    for bad in (0, 9, True, 4.0):
        with pytest.raises(ValueError, match=r"warps must be an integer in \[1, 8\]"):
            cuda.launch_params(prefix, 2, torch.bfloat16, warps=bad)
    with pytest.raises(ValueError, match="min_blocks must be an integer in"):
        cuda.launch_params(prefix, 2, torch.bfloat16, min_blocks=0)
    for bad in (10, 256, True, 200.0):
        with pytest.raises(ValueError, match=r"registers must be 0 \(the cap min_blocks implies\) or an integer in"):
            cuda.launch_params(prefix, 2, torch.bfloat16, registers=bad)
    with pytest.raises(ValueError, match="chains must be 1 or 2"):
        cuda.launch_params(prefix, 2, torch.bfloat16, chains=3)
    with pytest.raises(ValueError, match="stages must be 1 or 2"):
        cuda.launch_params(prefix, 2, torch.bfloat16, stages=True)
    if not torch.cuda.is_available():
        assert cuda.launch_params(prefix, 2, torch.bfloat16)[2] == "device cpu (needs CUDA)"


def test_launch_text_is_parsed_and_checked():
    """The command lines' ``K=V,...`` launch parameters (benchmarks/cuda_source_ab.py, scripts/compile_sm90.py)."""
    assert cuda.parse_launch("warps=8,stages=1", cuda.DEFAULTS) == {"warps": 8, "stages": 1}
    assert cuda.parse_launch("", cuda.DEFAULTS) == {}
    for bad in ("threads=128", "warps=eight", "warps"):
        with pytest.raises(ValueError, match=f"K in .*'warps'.* got '{bad}'"):
            cuda.parse_launch(f"stages=1,{bad}", cuda.DEFAULTS)


def test_combine_scratch_bounds_the_slots():
    """The in-kernel combine needs 16 + slots * G floats of the per-warp buffers; more slots go to the combine
    kernel."""
    d = cuda.defines(128, 26, 4, "mean", torch.bfloat16, 4, 2, 2, 2)
    scratch = cuda.combine_scratch_bytes(d)
    assert 0 < scratch < cuda.shared_bytes(d)
    most = (scratch // 4 - 16) // d["G"]
    assert cuda.combine_fits(d, most) and not cuda.combine_fits(d, most + 1)


def test_misaligned_views_are_not_the_cuda_kernels_case():
    """A view that starts inside its storage (here 2 bytes in) would fault in the kernel's 16-byte copies: refused
    with the array's name (auto then takes the Triton kernel)."""
    query, prefix, _, _ = make_interpreter_case()
    assert cuda._misaligned(prefix) is None
    shifted = torch.empty(prefix.values.numel() + 1, dtype=prefix.values.dtype, device=prefix.values.device)[1:]
    shifted = shifted.view_as(prefix.values).copy_(prefix.values)
    bad = CompressedKV(prefix.keys, shifted, prefix.lengths)
    assert cuda._misaligned(bad) == "values at an address that is not 16-byte aligned"
    if torch.cuda.is_available():
        # The case's decision is cached after the aligned call; alignment is still checked on every call.
        assert cuda.try_plan(query, prefix, 0.1)[1] is None
        assert "not 16-byte aligned" in cuda.try_plan(query, bad, 0.1)[1]
        with pytest.raises(ValueError, match="not 16-byte aligned"):
            cuda.SplitPlan(query, bad, 0.1)
        ref = decode_attn_ref(query.float(), prefix, None, None, 0.1)
        assert rel_err(decode_attn_triton(query, bad, None, None, 0.1), ref) < 1e-2


def test_launch_decisions_are_cached_within_a_bound(monkeypatch):
    """One decision per case, reused on later calls; a cache full of other cases starts over instead of growing."""
    query, prefix, _, _ = make_interpreter_case()
    monkeypatch.setattr(cuda, "_PLANS", {("other case", i): ({}, {}, "x", None) for i in range(4096)})
    first = cuda.try_plan(query, prefix, 0.1)
    assert len(cuda._PLANS) == 1
    assert cuda.try_plan(query, prefix, 0.1)[1] == first[1] and len(cuda._PLANS) == 1


def test_split_size_is_chosen_once_per_case(monkeypatch):
    """Later steps of a case reuse its split size (choosing it reads the layout's bytes) instead of choosing again."""
    query, prefix, _, _ = make_interpreter_case()
    seen = []

    class RecordingPlan:
        def __init__(self, query, prefix, scaling, chunk=None, _resolved=None):
            seen.append(chunk)
            self.chunk = 96 if chunk is None else chunk

    monkeypatch.setattr(cuda, "_PLANS", {})
    monkeypatch.setattr(cuda, "launch_params", lambda *a, **k: (dict(cuda.DEFAULTS), {"D": 128}, None))
    monkeypatch.setattr(cuda, "_built", lambda d, device: None)
    monkeypatch.setattr(cuda, "_misaligned", lambda prefix: None)
    monkeypatch.setattr(cuda, "SplitPlan", RecordingPlan)
    for _ in range(3):
        plan, why = cuda.try_plan(query, prefix, 0.1)
        assert why is None and plan.chunk == 96
    assert seen == [None, 96, 96, 96]  # chosen by the plan once, then given


def test_nvrtc_errors_carry_the_log():
    with pytest.raises(RuntimeError, match="could not compile"):
        cuda.nvrtc_compile("this is not C++", "broken", "sm_90", _pip_nvrtc())


def test_supported_names_the_reason():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(1, 1, 8, 96, generator=gen).bfloat16()
    packed = select_pack_ref(keys, torch.rand(1, 1, 96, generator=gen) + 0.1, 48, "code", "mean")
    prefix = CompressedKV(packed, torch.randn(1, 1, 8, 96).bfloat16(), torch.tensor([8], dtype=torch.int32))
    assert "head_dim 96" in cuda.supported(prefix, 4)
    packed = select_pack_ref(keys[..., :64], torch.rand(1, 1, 64, generator=gen) + 0.1, 32, "code", "gaussian")
    prefix = CompressedKV(packed, torch.randn(1, 1, 8, 64).bfloat16(), torch.tensor([8], dtype=torch.int32))
    assert "recovery 'gaussian'" in cuda.supported(prefix, 4)


@settings(max_examples=300, deadline=None)
@given(tokens=st.integers(1, 300_000), rows=st.integers(1, 600), sms=st.integers(1, 200), per_sm=st.integers(1, 4),
       warps=st.sampled_from([1, 2, 4, 8]), token_bytes=st.integers(40, 1100))
def test_split_size_covers_the_prefix_in_whole_tiles_within_one_wave(tokens, rows, sms, per_sm, warps, token_bytes):
    tile, wave = 32 * warps, per_sm * sms
    chunk = cuda.balanced_chunk(tokens, rows, sms, wave, tile, tile * token_bytes)
    splits = -(-tokens // chunk)
    assert chunk % tile == 0 and 0 < chunk <= -(-tokens // tile) * tile
    assert (splits - 1) * chunk < tokens  # no split past the prefix
    assert rows * splits <= max(wave, rows)  # one wave, unless the rows alone exceed it (then one split per row)


# Bytes in one block's tiles (4 warps x 32 tokens) on the measured layouts: Llama heads (D = 128) at λ = 0.8 and 0.5,
# SmolLM2's (D = 64) at λ = 0.5.
LLAMA_08, LLAMA_05, SMOL_05 = 128 * 342, 128 * 418, 128 * 210


def test_split_size_evens_out_the_blocks_where_that_was_measured_faster():
    """H200 (132 multiprocessors, 3 resident blocks at λ = 0.8): BENCHMARKS.md "Session 15" and "Session 16"."""
    # 32K·b1: 32 splits of 1024 tokens (two blocks on every multiprocessor) instead of 43 of 768 (three on most).
    assert cuda.balanced_chunk(32768, 8, 132, 396, 128, LLAMA_08) == 1024
    assert cuda.balanced_chunk(16384, 8, 132, 396, 128, LLAMA_08) == 512
    # 32K·b8, 64K·b1: two blocks a multiprocessor keep 88 KiB in flight, enough, at a 1-3 % lower load.
    assert cuda.balanced_chunk(32768, 64, 132, 396, 128, LLAMA_08) == 8192
    assert cuda.balanced_chunk(65536, 8, 132, 396, 128, LLAMA_08) == 2048
    # 128K·b1 and 12K·b1: two blocks a multiprocessor even at a 1.6 % higher / the same load.
    assert cuda.balanced_chunk(131072, 8, 132, 396, 128, LLAMA_08) == 4096
    assert cuda.balanced_chunk(12288, 8, 132, 396, 128, LLAMA_08) == 384
    # SmolLM2 128K·b8·λ=0.5: two blocks would keep 54 KiB in flight (11 % slower at a 2 % lower load): three stay.
    assert cuda.balanced_chunk(131072, 24, 132, 396, 128, SMOL_05) == 8192
    # Rows beyond one wave: one split per row.
    assert cuda.balanced_chunk(1000, 500, 132, 396, 128, LLAMA_05) == 1024


def test_split_size_prefers_fewer_blocks_only_with_enough_bytes_in_flight():
    """The same rows and loads with small and with large tiles: small tiles keep the most blocks per multiprocessor,
    large ones take the fewest that keep IN_FLIGHT_BYTES in flight."""
    small, large = cuda.IN_FLIGHT_BYTES // 3, cuda.IN_FLIGHT_BYTES // 2
    assert cuda.balanced_chunk(32768, 64, 132, 396, 128, small) == 5504  # 384 blocks, 3 on most multiprocessors
    assert cuda.balanced_chunk(32768, 64, 132, 396, 128, large) == 8192  # 256 blocks, 2 on most
    assert cuda.balanced_chunk(12288, 8, 132, 396, 128, small) == 256  # 384 blocks at the same load as 256
    assert cuda.balanced_chunk(12288, 8, 132, 396, 128, large) == 384


def block_bytes(d: int, dk: int, group: int, warps: int, min_blocks: int) -> int:
    """Shared memory of one block of the bf16, mean-recovery build."""
    return cuda.shared_bytes(cuda.defines(d, dk, group, "mean", torch.bfloat16, warps, min_blocks))


def test_eight_warp_blocks_only_where_one_four_warp_block_fits():
    """H200: 228 KiB of shared memory per multiprocessor, 227 KiB per block, 132 multiprocessors."""
    sm, limit = 233472, 232448

    def blocks(d, dk, group):
        return [block_bytes(d, dk, group, w, m) for w, m in ((4, 2), (8, 1))]

    big = (8, 131072, 132)  # rows, tokens, multiprocessors: 128K tokens at batch 1 with 8 KV heads
    assert cuda.lone_block(*blocks(256, 26, 4), sm, limit, *big)  # D = 256, λ = 0.9: 127 KiB, one 4-warp block fits
    assert cuda.lone_block(*blocks(128, 116, 4), sm, limit, *big)  # D = 128, λ = 0.1
    assert not cuda.lone_block(*blocks(128, 64, 4), sm, limit, *big)  # D = 128, λ = 0.5: two fit
    assert not cuda.lone_block(*blocks(128, 26, 8), sm, limit, *big)  # D = 128, λ = 0.8, 8 query heads a KV head
    assert not cuda.lone_block(*blocks(256, 128, 4), sm, limit, *big)  # D = 256, λ = 0.5: the 8-warp block won't fit
    assert not cuda.lone_block(*blocks(256, 26, 4), 0, limit, *big)  # the device did not say
    # 8K tokens, 2 KV heads: 64 blocks of 256-token tiles for 132 multiprocessors (4-warp tiles make 128).
    assert not cuda.lone_block(*blocks(256, 26, 4), sm, limit, 2, 8192, 132)
    assert cuda.lone_block(*blocks(256, 26, 4), sm, limit, 2, 32768, 132)


def test_wide_lone_blocks_at_d256_where_the_kept_term_is_long():
    """One 7- or 6-warp block with one stage at D = 256 where a 4-warp block fits a multiprocessor once (H200 figures)
    and the tensor cores take the kept term or a token keeps at least a quarter of its channels; not at D = 64 / 128,
    nor where two 4-warp blocks fit."""
    sm = 233472

    def rule(d, kept, group, sm_bytes=sm):
        return cuda.wide_lone_block(d, kept, group, block_bytes(d, kept, group, 4, 1), sm_bytes)

    for kept, group in ((64, 2), (103, 2), (128, 4), (180, 2), (52, 8), (128, 8), (208, 1), (26, 6)):
        assert rule(256, kept, group), (kept, group)
    assert not rule(256, 63, 2) and not rule(256, 52, 4)  # the walk over less than a quarter: 0.90-0.98x
    assert not rule(128, 116, 4) and not rule(128, 90, 8)  # D = 128 (lone_block's 8 warps)
    assert not rule(256, 128, 2, 2 * sm)  # two 4-warp blocks fit
    assert not rule(256, 128, 2, 0)  # the device did not say
    # What the launcher then builds: 7 warps keep the list walk where it fits one stage, up to DK = 103 with 2 query
    # heads; at DK = 128 only 6 warps keep it; the kept MMA's blocks (no list) take 6.
    limit = 232448

    def one_stage(kept, group, warps):
        return cuda.defines_within(limit, 256, kept, group, "mean", torch.bfloat16, warps, 1, 2, 1, records=True)

    for kept, group, warps in ((103, 2, 7), (77, 4, 7), (64, 2, 7), (128, 2, 6), (128, 4, 6)):
        assert one_stage(kept, group, warps).get("WALK_LIST") == 1, (kept, group, warps)
        assert cuda.shared_bytes(one_stage(kept, group, warps)) <= limit
    assert "WALK_LIST" not in one_stage(128, 2, 7)  # the list does not fit 7 warps there
    assert one_stage(52, 8, 6).get("KEPT_MMA") == 2 and cuda.shared_bytes(one_stage(52, 8, 6)) <= limit
    # 8 query heads at λ = 0.5: the kept MMA does not fit 6 warps, so the launcher keeps its 4-warp block.
    assert "KEPT_MMA" not in one_stage(128, 8, 6) and cuda.defines_within(
        limit, 256, 128, 8, "mean", torch.bfloat16, 4, 1, records=True).get("KEPT_MMA") == 2


def test_eight_warp_blocks_where_kept_rows_are_short():
    """One 8-warp block where a token keeps at most a quarter of its channels, at D = 64 / 128 with 2-4 query heads a
    KV head, as long as its 256-token tiles give every multiprocessor a block."""
    limit = 232448

    def block8(d, dk, group):
        return block_bytes(d, dk, group, 8, 1)

    big = (8, 131072, 132)
    for d, dk, group in ((128, 26, 4), (128, 32, 4), (128, 13, 2), (64, 16, 3), (64, 7, 3)):  # λ 0.75-0.9
        assert cuda.short_kept_block(d, dk, group, block8(d, dk, group), limit, *big), (d, dk, group)
    assert not cuda.short_kept_block(128, 33, 4, block8(128, 33, 4), limit, *big)  # more than a quarter kept
    assert not cuda.short_kept_block(128, 64, 4, block8(128, 64, 4), limit, *big)  # λ = 0.5
    assert not cuda.short_kept_block(128, 26, 8, block8(128, 26, 8), limit, *big)  # 8 query heads a KV head
    assert not cuda.short_kept_block(128, 26, 1, block8(128, 26, 1), limit, *big)  # one (not measured)
    assert not cuda.short_kept_block(256, 51, 4, block8(256, 51, 4), limit, *big)  # D = 256 (not measured)
    assert not cuda.short_kept_block(128, 26, 4, limit + 1, limit, *big)  # the 8-warp block does not fit
    assert not cuda.short_kept_block(128, 26, 4, block8(128, 26, 4), limit, 8, 4096, 132)  # 128 blocks for 132
    assert cuda.short_kept_block(128, 26, 4, block8(128, 26, 4), limit, 8, 8192, 132)


@pytest.mark.parametrize("bad", [dict(tokens=0), dict(rows=-1), dict(sms=0), dict(wave=1.5), dict(tile=True),
                                 dict(tile_bytes=0)])
def test_split_size_inputs_are_checked(bad):
    args = dict(tokens=4096, rows=8, sms=132, wave=396, tile=128, tile_bytes=LLAMA_08) | bad
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        cuda.balanced_chunk(**args)
