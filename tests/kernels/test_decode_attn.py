"""``decode_attn_triton`` vs ``decode_attn_ref`` (fp32), plus the core chain on the Triton path:
attention over packed keys == attention over the materialised K̂, and == dense attention at λ = 0.

CPU: Triton interpreter, small shapes. GPU (``gpu`` marker): full shapes, bf16 / fp16, every expansion mode.
"""

from __future__ import annotations

import pytest
import torch

from sparkv.cache.layout import CompressedKV, DenseKeys
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import PER_QUERY_KERNEL_MAX, decode_attn
from sparkv.kernels.decode_attn.fused import (
    EXPAND_GLOBAL,
    EXPAND_TILE,
    LAST_LAUNCH,
    OTHER_CONFIGS,
    SPARK_CONFIGS,
    SPARK_CONFIGS_SMALL_HEAD,
    combine_partials,
    decode_attn_triton,
    fold_queries,
    fold_tokens,
    unfold_output,
)
from sparkv.kernels.decode_attn.reference import combine_partials_ref, decode_attn_ref
from sparkv.kernels.recover.reference import recover_ref
from sparkv.kernels.select_pack.reference import select_pack_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = {torch.bfloat16: 1e-2, torch.float16: 1e-2, torch.float32: 1e-5}
CPU_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "output holds NaN (unwritten or poisoned values)"
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def make_case(b, h, g, s, st, d, dk, dtype, recovery="mean", lengths=None, seed=0):
    """Random query, compressed prefix (``dk=None``: DenseKeys; ``s=0``: no prefix) and dense tail."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(DEVICE)

    query = rnd(b, h * g, 1, d)
    prefix = None
    if s > 0:
        keys, values = rnd(b, h, s, d), rnd(b, h, s, d)
        if lengths is None:
            lengths = [s] + [max(1, (s * (i + 1)) // (b + 1)) for i in range(b - 1)]
        lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
        if dk is None:
            layout = DenseKeys(keys)
        else:
            stat = (torch.rand(b, h, d, generator=gen) + 0.05).to(DEVICE)
            layout = select_pack_ref(keys, stat, dk, "code", recovery, recovery_constant=0.3)
        prefix = CompressedKV(layout, values, lens)
    tail_k = rnd(b, h, st, d) if st else None
    tail_v = rnd(b, h, st, d) if st else None
    return query, prefix, tail_k, tail_v


def reference(query, prefix, tail_k, tail_v, scaling):
    return decode_attn_ref(query.float(), prefix, tail_k, tail_v, scaling)


def run_and_check(query, prefix, tail_k, tail_v, rtol, **kw):
    d = query.shape[-1]
    out = decode_attn_triton(query, prefix, tail_k, tail_v, d ** -0.5, **kw)
    assert out.shape == query.shape and out.dtype == query.dtype
    err = rel_err(out, reference(query, prefix, tail_k, tail_v, d ** -0.5))
    assert err < rtol, f"relative error {err:.2e} >= {rtol:.0e}"
    return out


# --- CPU tier (interpreter) ---------------------------------------------------------------------------------

@pytest.mark.interpret
@pytest.mark.parametrize("recovery", ["mean", "mean_linear", "zero", "constant"])
def test_decode_recoveries(recovery, poison_empty):
    case = make_case(2, 2, 3, 63, 5, 64, 13, torch.float32, recovery)
    run_and_check(*case, RTOL[torch.float32])


SHAPES = [
    # (B, H, G, S, ST, D, DK)
    (1, 1, 1, 1, 0, 64, 13),
    (2, 2, 3, 63, 4, 64, 32),
    (2, 1, 8, 200, 0, 128, 26),
    (1, 2, 1, 63, 17, 128, 64),
    (2, 1, 3, 63, 1, 256, 128),
    (1, 1, 2, 40, 3, 100, 50),  # head_dim that is no power of two
]


@pytest.mark.parametrize("b,h,g,s,st,d,dk", SHAPES,
                         ids=[f"B{b}-H{h}-G{g}-S{s}-T{st}-D{d}-DK{dk}" for b, h, g, s, st, d, dk in SHAPES])
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=["bf16", "fp16", "fp32"])
def test_decode_shapes(b, h, g, s, st, d, dk, dtype, poison_empty):
    run_and_check(*make_case(b, h, g, s, st, d, dk, dtype, seed=s + d), RTOL[dtype])


@pytest.mark.parametrize("expand", [EXPAND_TILE, EXPAND_GLOBAL])
def test_decode_expand_modes_cpu(expand, poison_empty):
    case = make_case(2, 2, 3, 70, 2, 128, 26, torch.float32)
    run_and_check(*case, RTOL[torch.float32], config={"EXPAND": expand, "BS": 32})


@pytest.mark.interpret
def test_decode_dense_prefix_and_tail_only(poison_empty):
    run_and_check(*make_case(2, 2, 4, 70, 3, 128, None, torch.bfloat16), RTOL[torch.bfloat16])
    run_and_check(*make_case(2, 2, 4, 0, 20, 64, None, torch.float16), RTOL[torch.float16])


def test_decode_split_boundaries_and_empty_rows(poison_empty):
    # Several splits (chunk 32 under the interpreter), a row whose length ends mid-tile, a row with one token.
    case = make_case(3, 1, 2, 130, 0, 64, 13, torch.float32, lengths=[130, 33, 1])
    run_and_check(*case, RTOL[torch.float32])
    run_and_check(*case, RTOL[torch.float32], chunk=64)


COMBINE_CASES = [
    # (B, H, G, NS, D, slots per pass): one pass, several passes, more slots than one default pass takes (256),
    # a head_dim that is no multiple of the 32 columns a program writes
    (1, 2, 4, 1, 64, None),
    (2, 1, 3, 33, 128, None),
    (1, 2, 1, 33, 128, 16),
    (1, 1, 7, 300, 256, None),
    (2, 1, 2, 5, 100, None),
]


@pytest.mark.interpret
@pytest.mark.parametrize("b,h,g,ns,d,per_pass", COMBINE_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_combine_kernel_equals_its_reference(b, h, g, ns, d, per_pass, dtype, poison_empty):
    """The merge of split partials against the plain softmax-weighted sum, with empty splits (-inf) in every row
    but never all of a row's (a row with nothing to attend to is refused before any kernel runs)."""
    gen = torch.Generator(device="cpu").manual_seed(ns + d)
    o_part = torch.randn(b * h, ns, g, d, generator=gen).to(DEVICE)
    lse_part = (torch.randn(b * h, ns, g, generator=gen) * 4).to(DEVICE)
    empty = torch.rand(b * h, ns, g, generator=gen).to(DEVICE) < 0.3
    empty[:, 0] = False
    lse_part = lse_part.masked_fill(empty, float("-inf"))
    query = torch.randn(b, h * g, 1, d, generator=gen).to(dtype).to(DEVICE)
    out = combine_partials(o_part, lse_part, query, per_pass)
    ref = combine_partials_ref(o_part, lse_part, query.float())
    assert out.shape == query.shape and out.dtype == dtype
    assert rel_err(out, ref) < RTOL[dtype]


def test_decode_chain_packed_equals_materialised(poison_empty):
    """Attention over packed keys == attention over the materialised K̂ == (λ = 0) dense attention."""
    query, prefix, tail_k, tail_v = make_case(2, 2, 3, 63, 3, 64, 13, torch.float32)
    packed = decode_attn_triton(query, prefix, tail_k, tail_v, 0.125)
    dense_hat = CompressedKV(DenseKeys(recover_ref(prefix.keys)), prefix.values, prefix.lengths)
    materialised = decode_attn_triton(query, dense_hat, tail_k, tail_v, 0.125)
    assert rel_err(packed, materialised) < 1e-5

    query, prefix, tail_k, tail_v = make_case(2, 2, 3, 63, 3, 64, None, torch.float32)
    stat = torch.rand(2, 2, 64, device=DEVICE) + 0.1
    full = CompressedKV(select_pack_ref(prefix.keys.keys, stat, 64), prefix.values, prefix.lengths)
    assert rel_err(decode_attn_triton(query, full, tail_k, tail_v, 0.125),
                   decode_attn_triton(query, prefix, tail_k, tail_v, 0.125)) < 1e-5


@pytest.mark.parametrize("recovery", ["mean", "mean_linear", "zero", "constant"])
def test_pages_give_the_arrays_answer_on_every_path(recovery, poison_empty):
    """The PyTorch path over pages (unpacked block by block, blocks not aligned to tiles) equals its run over the
    arrays bit for bit; the Triton path (interpreter on the CPU) unpacks them with one warning and equals its run
    over the arrays; ``decode_storage`` keeps arrays off CUDA."""
    import warnings

    from sparkv.cache.layout import SparKPages
    from sparkv.kernels.decode_attn import decode_storage, fused

    query, arrays, tail_k, tail_v = make_case(3, 2, 2, 70, 3, 64, 13, torch.bfloat16, recovery, [70, 33, 1], seed=4)
    pages = SparKPages.from_compressed(arrays)
    for block in (1024, 20):
        assert torch.equal(decode_attn_ref(query.float(), pages, tail_k, tail_v, 0.2, block_size=block),
                           decode_attn_ref(query.float(), arrays, tail_k, tail_v, 0.2, block_size=block))
    if DEVICE == "cpu":
        assert decode_storage(arrays, query.shape[1]) is arrays
        fused._PAGES_UNPACKED.discard(torch.device(DEVICE))
        with pytest.warns(UserWarning, match="every step unpacks it"):
            got = decode_attn(query, pages, tail_k, tail_v, 0.2, backend="triton")
        assert torch.equal(got, decode_attn(query, arrays, tail_k, tail_v, 0.2, backend="triton"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            decode_attn(query, pages, tail_k, tail_v, 0.2, backend="triton")
    assert torch.equal(decode_attn(query, pages, tail_k, tail_v, 0.2, backend="torch"),
                       decode_attn(query, arrays, tail_k, tail_v, 0.2, backend="torch"))


def test_decode_dispatch_and_errors():
    query, prefix, tail_k, tail_v = make_case(1, 1, 2, 10, 2, 64, 13, torch.bfloat16)
    out = decode_attn(query, prefix, tail_k, tail_v, 0.125, backend="triton")
    assert rel_err(out, reference(query, prefix, tail_k, tail_v, 0.125)) < 1e-2
    with pytest.raises(ValueError, match="3 new tokens need their own keys as the tail's last 3 tokens; the tail "
                                         "holds 2"):
        decode_attn_triton(query.expand(-1, -1, 3, -1), prefix, tail_k, tail_v, 0.125)
    with pytest.raises(ValueError, match="Q >= 1"):
        decode_attn_triton(query[:, :, :0], prefix, tail_k, tail_v, 0.125)
    with pytest.raises(ValueError, match="prefix or a tail"):
        decode_attn_triton(query, None, None, None, 0.125)
    with pytest.raises(ValueError, match="tail_keys is on meta"):
        decode_attn_triton(query, prefix, tail_k.to("meta"), tail_v, 0.125)
    for fn in (decode_attn_triton, decode_attn_ref):  # both paths refuse a tail that does not fit
        with pytest.raises(ValueError, match="does not match the query"):
            fn(query, prefix, tail_k[..., :32], tail_v[..., :32], 0.125)
        with pytest.raises(ValueError, match="prefix's H"):
            fn(query, prefix, tail_k.expand(-1, 2, -1, -1), tail_v.expand(-1, 2, -1, -1), 0.125)
        with pytest.raises(ValueError, match="both be"):
            fn(query, prefix, tail_k, tail_v[:, :, :1], 0.125)
        with pytest.raises(ValueError, match="given together"):
            fn(query, prefix, tail_k, None, 0.125)
    q2, prefix2, _, _ = make_case(1, 2, 2, 10, 0, 64, 13, torch.bfloat16)
    for fn in (decode_attn_triton, decode_attn_ref):
        with pytest.raises(ValueError, match="HQ a multiple of H"):
            fn(q2[:, :3], prefix2, None, None, 0.125)
    for fn in (decode_attn_triton, decode_attn_ref):  # a scale that is no finite positive number
        for bad in (0.0, -0.125, float("nan"), float("inf"), True, torch.tensor(0.125)):
            with pytest.raises(ValueError, match="scaling must be a finite number > 0"):
                fn(query, prefix, tail_k, tail_v, bad)
    for bad in (-32, 0, 33, 48, 32.0, True):  # a split is a positive multiple of 32 tokens
        with pytest.raises(ValueError, match="chunk must be None or a positive multiple of 32"):
            decode_attn_triton(query, prefix, tail_k, tail_v, 0.125, chunk=bad)
    for bad in (0, -1, 2.5, None):
        with pytest.raises(ValueError, match="block_size must be a positive integer"):
            decode_attn_ref(query, prefix, tail_k, tail_v, 0.125, block_size=bad)


def _several_queries(b, h, g, s, st, q_len, d, dk, dtype, seed=0, **kw):
    """A case with ``q_len`` new tokens: their queries and a tail whose last ``q_len`` tokens are theirs."""
    _, prefix, tail_k, tail_v = make_case(b, h, g, s, st, d, dk, dtype, seed=seed, **kw)
    query = torch.randn(b, h * g, q_len, d, generator=torch.Generator().manual_seed(seed + 1)).to(dtype).to(DEVICE)
    return query, prefix, tail_k, tail_v


SEVERAL_TOKEN_CASES = [  # (B, H, G, S, ST, Q, D, DK, recovery, prefix lengths): DK None = dense prefix, S 0 = none
    (2, 2, 3, 63, 5, 5, 64, 13, "mean", [63, 20]),
    (3, 1, 2, 70, 12, 4, 64, 40, "constant", None),
    (1, 2, 4, 33, 2, 2, 32, 9, "zero", None),
    (1, 2, 2, 40, 9, 4, 32, None, "mean", None),
    (2, 1, 4, 0, 7, 3, 64, None, "mean", None),
]


@pytest.mark.interpret
@pytest.mark.parametrize("case", SEVERAL_TOKEN_CASES, ids=["spark", "constant", "zero", "dense", "tail-only"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_several_new_tokens_in_one_launch(case, dtype, poison_empty):
    """Q new tokens in one launch (folded into head groups; query i sees the tail up to its own token) equal the
    blockwise reference's causal attention of all the queries at once, per row lengths included; the dispatcher takes
    them for 2..PER_QUERY_KERNEL_MAX tokens."""
    if dtype == torch.float32 and DEVICE == "cuda":
        pytest.skip("the GPU kernels take fp32 under the interpreter only")
    *shape, recovery, lengths = case
    query, prefix, tail_k, tail_v = _several_queries(*shape, dtype, recovery=recovery, lengths=lengths)
    scaling = query.shape[-1] ** -0.5
    want = reference(query, prefix, tail_k, tail_v, scaling)
    got = decode_attn_triton(query, prefix, tail_k, tail_v, scaling)
    assert got.shape == query.shape and got.dtype == query.dtype and rel_err(got, want) < RTOL[dtype]
    # Each query alone, over the tail up to its own token: the rows of one launch are the one-token steps.
    q_len, seen = query.shape[2], tail_k.shape[2] - query.shape[2]
    for i in (0, q_len - 1):
        one = decode_attn_triton(query[:, :, i:i + 1], prefix, tail_k[:, :, :seen + i + 1], tail_v[:, :, :seen + i + 1],
                                 scaling)
        assert rel_err(got[:, :, i:i + 1], one) < RTOL[dtype]
    if dtype != torch.float32:  # fp32 runs the GPU kernels under the interpreter only: not dispatched there
        assert rel_err(decode_attn(query, prefix, tail_k, tail_v, scaling, backend="triton"), want) < RTOL[dtype]
    assert 2 <= q_len <= PER_QUERY_KERNEL_MAX
    many = query[:, :, :1].expand(-1, -1, PER_QUERY_KERNEL_MAX + 1, -1)
    with pytest.raises(ValueError, match=f"at most PER_QUERY_KERNEL_MAX = {PER_QUERY_KERNEL_MAX} new tokens"):
        decode_attn(many, prefix, tail_k, tail_v, scaling, backend="triton")


@pytest.mark.interpret
def test_several_new_tokens_with_the_tail_length_on_the_device(poison_empty):
    """A CUDA graph's tail (capacity + a device-side length) with several new tokens: the queries' keys are the last
    ``Q`` of the valid tokens, garbage past them never reaches the output."""
    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    query, prefix, tail_k, tail_v = _several_queries(2, 2, 3, 63, 12, 4, 64, 13, dtype)
    tail_k[:, :, 9:], tail_v[:, :, 9:] = 1e4, float("nan")  # past the valid 9 tokens
    length = torch.tensor([9], dtype=torch.int32, device=DEVICE)
    want = reference(query, prefix, tail_k[:, :, :9], tail_v[:, :, :9], 0.125)
    got = decode_attn_triton(query, prefix, tail_k, tail_v, 0.125, tail_length=length)
    assert got.isfinite().all() and rel_err(got, want) < RTOL[dtype]


@pytest.mark.parametrize("q_len,group,rows_max,want", [
    (1, 4, 32, 1), (2, 4, 8, 2), (7, 4, 8, 2), (5, 3, 32, 8), (64, 4, 32, 8), (3, 9, 8, 1), (3, 16, 32, 2),
    (40, 1, 32, 32), (2, 5, 8, 1)])
def test_fold_tokens_fill_the_head_group_with_a_power_of_two(q_len, group, rows_max, want):
    assert fold_tokens(q_len, group, rows_max) == want


@pytest.mark.parametrize("fold", [1, 2, 4, 8])
@pytest.mark.parametrize("b", [1, 2])
def test_folded_query_rows_hold_each_token_once_and_unfold_back(fold, b):
    """Row ``b·R + r`` holds tokens ``r·F + f`` as heads ``hq·F + f``, after zero queries in front, in a contiguous
    tensor (one row's reshape alone can be a strided view)."""
    hq, q_len, d = 6, 7, 4
    query = torch.randn(b, hq, q_len, d, generator=torch.Generator().manual_seed(fold))
    q, pad = fold_queries(query, fold)
    r = -(-q_len // fold)
    assert q.shape == (b * r, hq * fold, 1, d) and q.is_contiguous() and pad == r * fold - q_len
    padded = torch.cat([torch.zeros(b, hq, pad, d), query], dim=2)
    for bi, ri, hi, fi in ((0, 0, 0, 0), (b - 1, r - 1, hq - 1, fold - 1), (b - 1, 0, 2, fold // 2)):
        assert torch.equal(q[bi * r + ri, hi * fold + fi, 0], padded[bi, hi, ri * fold + fi])
    assert torch.equal(unfold_output(q, b, q_len, fold, pad), query)


FOLD_CASES = [  # (B, H, G, S, ST, Q, D, DK, prefix lengths, fold): DK None = dense prefix, S 0 = none
    (2, 1, 8, 70, 45, 7, 32, 9, [70, 33], 4),  # 2 rows a key row, 1 zero query in front; 2 tail splits
    (1, 2, 3, 40, 40, 12, 32, None, None, 8),  # dense prefix: 2 rows, 4 zero queries
    (2, 2, 1, 0, 50, 20, 32, None, None, 32),  # tail only: 1 row, 12 zero queries
]


@pytest.mark.interpret
@pytest.mark.parametrize("case", FOLD_CASES, ids=["spark", "dense", "tail-only"])
def test_folded_new_tokens_equal_one_row_per_token(case, poison_empty):
    """Folded steps that leave several query rows a key row, zero queries in front, and tail splits in which some
    folded queries see no token (their rows stay empty, not NaN): equal to the reference and to one query row per
    token."""
    *shape, lengths, want_fold = case
    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    query, prefix, tail_k, tail_v = _several_queries(*shape, dtype, lengths=lengths)
    scaling = query.shape[-1] ** -0.5
    want = reference(query, prefix, tail_k, tail_v, scaling)
    got = decode_attn_triton(query, prefix, tail_k, tail_v, scaling, chunk=32)
    assert LAST_LAUNCH["fold"] == want_fold
    rows = decode_attn_triton(query, prefix, tail_k, tail_v, scaling, chunk=32, fold=False)
    assert LAST_LAUNCH["fold"] == 1
    assert got.shape == query.shape and rel_err(got, want) < RTOL[dtype] and rel_err(rows, want) < RTOL[dtype]
    assert rel_err(got, rows) < RTOL[dtype]
    with pytest.raises(ValueError, match="fold must be True or False"):
        decode_attn_triton(query, prefix, tail_k, tail_v, scaling, fold=1)


@pytest.mark.interpret
def test_padding_queries_of_a_tail_only_step_see_a_token(poison_empty):
    """A tail-only step whose tail is just its Q new tokens, padded in front to a multiple of F: the padding queries
    see the first token (no 0/0 anywhere, not even in rows that are dropped), the real ones their own prefix of it."""
    import warnings

    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    query, prefix, tail_k, tail_v = _several_queries(1, 1, 3, 0, 6, 6, 32, None, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the interpreter warns on a 0/0 in the combine
        got = decode_attn_triton(query, None, tail_k, tail_v, 0.2)
    assert LAST_LAUNCH["fold"] == 8  # 2 zero queries in front of the 6
    assert rel_err(got, reference(query, None, tail_k, tail_v, 0.2)) < RTOL[dtype]


TAIL_LENGTH_CASES = [  # (B, H, G, S, tail capacity, valid tail tokens, D, DK): DK None = dense prefix, S 0 = none
    (2, 2, 3, 63, 9, 1, 64, 13),
    (2, 2, 3, 63, 9, 5, 64, 13),
    (1, 3, 2, 40, 37, 37, 32, None),
    (3, 1, 4, 0, 70, 33, 64, None),
]


def _with_tail_length(b, h, g, s, cap, valid, d, dk, dtype):
    """A case whose tail buffers hold ``cap`` tokens of which the first ``valid`` count, the rest random garbage
    (never zeros: a kernel reading past the length must change the result)."""
    query, prefix, tail_k, tail_v = make_case(b, h, g, s, cap, d, dk, dtype, seed=valid)
    if valid + 1 < cap:  # a never-written slot may hold NaN: it must not reach the output (0 · NaN)
        tail_k[:, :, -1] = float("nan")
        tail_v[:, :, -1] = float("nan")
    return query, prefix, tail_k, tail_v, torch.tensor([valid], dtype=torch.int32, device=DEVICE)


@pytest.mark.interpret
@pytest.mark.parametrize("case", TAIL_LENGTH_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_tail_length_on_the_device_equals_the_cut_tail(case, dtype, poison_empty):
    """A tail given as capacity + a device-side length (CUDA-graph decode) attends to exactly the first
    ``tail_length`` tokens, in both the reference and the kernel."""
    query, prefix, tail_k, tail_v, length = _with_tail_length(*case, dtype)
    valid, d = case[5], case[6]
    cut_k, cut_v = tail_k[:, :, :valid], tail_v[:, :, :valid]
    expected = reference(query, prefix, cut_k, cut_v, d ** -0.5)
    ref = decode_attn_ref(query.float(), prefix, tail_k, tail_v, d ** -0.5, tail_length=length)
    assert rel_err(ref, expected) < 1e-6
    if valid < case[4]:  # the garbage past the length would change the answer: the check above can fail
        whole = reference(query, prefix, tail_k.nan_to_num(), tail_v.nan_to_num(), d ** -0.5)
        assert rel_err(whole, expected) > 1e-3
    out = decode_attn_triton(query, prefix, tail_k, tail_v, d ** -0.5, tail_length=length)
    assert out.shape == query.shape and out.dtype == query.dtype
    assert rel_err(out, expected) < RTOL[dtype]
    assert rel_err(decode_attn(query, prefix, tail_k, tail_v, d ** -0.5, tail_length=length), expected) < RTOL[dtype]


def test_tail_length_is_checked():
    query, prefix, tail_k, tail_v, length = _with_tail_length(1, 1, 2, 10, 4, 2, 64, 13, torch.float32)
    for fn in (decode_attn_ref, decode_attn_triton):
        with pytest.raises(ValueError, match="tail_length needs tail_keys"):
            fn(query, prefix, None, None, 0.125, tail_length=length)
        for bad in (torch.tensor([2, 2], dtype=torch.int32), torch.tensor([2.0]), 2):
            with pytest.raises(ValueError, match="tail_length must be a one-element int32/int64 tensor"):
                fn(query, prefix, tail_k, tail_v, 0.125, tail_length=bad)


# --- GPU tier -------------------------------------------------------------------------------------------------

GPU_SHAPES = [
    # (B, H, G, S, ST, D, λ)
    (2, 8, 4, 16384, 37, 128, 0.5),
    (2, 8, 4, 16384, 37, 128, 0.8),
    (1, 8, 4, 65536, 0, 128, 0.8),
    (3, 3, 3, 8192, 5, 64, 0.5),
    (3, 3, 3, 8192, 5, 64, 0.8),
    (2, 4, 2, 4096, 9, 256, 0.5),
]


@pytest.mark.gpu
@pytest.mark.parametrize("b,h,g,s,st,d,lam", GPU_SHAPES,
                         ids=[f"B{b}-H{h}-G{g}-S{s}-T{st}-D{d}-L{lam}" for b, h, g, s, st, d, lam in GPU_SHAPES])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("spark_kernel", ["triton", "auto"])
def test_decode_gpu_full(b, h, g, s, st, d, lam, dtype, spark_kernel, poison_empty):
    """The Triton kernel, and what the GPU path dispatches to (the CUDA kernel for these shapes)."""
    case = make_case(b, h, g, s, st, d, kept_channels(d, lam), dtype, seed=d)
    run_and_check(*case, 1e-2, spark_kernel=spark_kernel)


@pytest.mark.gpu
@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_tail_length_on_the_gpu(lam, poison_empty):
    """Full-size prefix (the CUDA kernel takes it) plus a tail of capacity 96 with 41 valid tokens."""
    query, prefix, tail_k, tail_v, length = _with_tail_length(2, 8, 4, 16384, 96, 41, 128, kept_channels(128, lam),
                                                              torch.bfloat16)
    expected = reference(query, prefix, tail_k[:, :, :41], tail_v[:, :, :41], 128 ** -0.5)
    out = decode_attn_triton(query, prefix, tail_k, tail_v, 128 ** -0.5, tail_length=length)
    assert rel_err(out, expected) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("lam", [0.5, 0.8])
@pytest.mark.parametrize("q_len", [2, 7, PER_QUERY_KERNEL_MAX])
@pytest.mark.parametrize("head", [(8, 4, 128), (3, 3, 64)], ids=["llama", "smollm2"])
def test_several_new_tokens_on_the_gpu(lam, q_len, head, poison_empty):
    """Assisted decoding's verification step on a full-size prefix, per-row lengths, arrays and pages (the CUDA
    kernel takes the prefix with two new tokens folded into each query row, 6-8 query heads a KV head, the Triton
    kernel the causal tail), against the fp32 reference, one-token steps, one query row per token, and the Triton
    kernel's wider fold."""
    from sparkv.cache.layout import SparKPages
    from sparkv.kernels.decode_attn import fused

    h, g, d = head
    query, prefix, tail_k, tail_v = _several_queries(2, h, g, 16384, q_len + 40, q_len, d, kept_channels(d, lam),
                                                     torch.bfloat16, lengths=[16384, 9000])
    scaling = d ** -0.5
    want = reference(query, prefix, tail_k, tail_v, scaling)
    last = decode_attn_triton(query[:, :, -1:], prefix, tail_k, tail_v, scaling)
    for form in (prefix, SparKPages.from_compressed(prefix)):
        fused.LAST_LAUNCH.clear()  # the dispatcher must launch the kernels, not leave the last call's record
        got = decode_attn(query, form, tail_k, tail_v, scaling)
        assert fused.LAST_LAUNCH.get("spark_kernel") == "cuda"  # the CUDA kernel took the prefix
        assert fused.LAST_LAUNCH["fold"] == 2
        assert rel_err(got, want) < 1e-2 and rel_err(got[:, :, -1:], last) < 1e-2
        rows = decode_attn_triton(query, form, tail_k, tail_v, scaling, fold=False)
        assert fused.LAST_LAUNCH["fold"] == 1 and rel_err(rows, want) < 1e-2
    wide = decode_attn_triton(query, prefix, tail_k, tail_v, scaling, spark_kernel="triton")
    assert fused.LAST_LAUNCH["fold"] == (2 if q_len == 2 else 8)  # 3-4 query heads a KV head: 8 tokens fill 32 rows
    assert rel_err(wide, want) < 1e-2


GPU_CONFIGS = SPARK_CONFIGS + SPARK_CONFIGS_SMALL_HEAD + OTHER_CONFIGS


@pytest.mark.gpu
@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: f"BS{c.kwargs['BS']}-E{c.kwargs['EXPAND']}-W{c.num_warps}"
                                                               f"-S{c.num_stages}-PF{c.kwargs['PF']}-R{c.maxnreg}")
@pytest.mark.parametrize("recovery", ["mean", "mean_linear", "zero", "constant"])
def test_decode_gpu_configs(config, recovery, poison_empty):
    """Every autotune candidate (block sizes, expansion modes) on every recovery path."""
    case = make_case(2, 8, 4, 8192, 3, 128, 26, torch.bfloat16, recovery, lengths=[8192, 5000])
    launch = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages, maxnreg=config.maxnreg)
    run_and_check(*case, 1e-2, config=launch, spark_kernel="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_decode_gpu_dense_and_chain(dtype, poison_empty):
    query, prefix, tail_k, tail_v = make_case(2, 8, 4, 16384, 7, 128, None, dtype)
    run_and_check(query, prefix, tail_k, tail_v, 1e-2)
    stat = torch.rand(2, 8, 128, device=DEVICE) + 0.1
    packed = CompressedKV(select_pack_ref(prefix.keys.keys, stat, 26), prefix.values, prefix.lengths)
    dense_hat = CompressedKV(DenseKeys(recover_ref(packed.keys).to(dtype)), prefix.values, prefix.lengths)
    b_ = decode_attn_triton(query, dense_hat, tail_k, tail_v, 128 ** -0.5)
    for kernel in ("triton", "auto"):
        a = decode_attn_triton(query, packed, tail_k, tail_v, 128 ** -0.5, spark_kernel=kernel)
        assert rel_err(a, b_) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_decode_and_select_pack_on_a_second_gpu(poison_empty):
    """A model split across GPUs: the kernels must run on the tensors' device, not on the current one (cuda:0)."""
    from sparkv.kernels.select_pack.fused import select_pack_triton

    torch.cuda.set_device(0)
    gen = torch.Generator(device="cpu").manual_seed(1)
    query, keys, values, tail_k, tail_v = (torch.randn(*shape, generator=gen).to(torch.bfloat16).to("cuda:1")
                                           for shape in [(2, 32, 1, 128)] + [(2, 8, 4096, 128)] * 2
                                           + [(2, 8, 5, 128)] * 2)
    stat = torch.rand(2, 8, 128, generator=gen).to("cuda:1") + 0.1
    packed = select_pack_triton(keys, stat, 64)
    assert packed.kept_values.device == torch.device("cuda:1")
    assert torch.equal(packed.kept_bits, select_pack_ref(keys, stat, 64).kept_bits)
    compressed = CompressedKV(packed, values, torch.tensor([4096, 3000], dtype=torch.int32, device="cuda:1"))
    out = decode_attn_triton(query, compressed, tail_k, tail_v, 128 ** -0.5)
    assert out.device == torch.device("cuda:1")
    assert rel_err(out, reference(query, compressed, tail_k, tail_v, 128 ** -0.5)) < 1e-2


def test_a_row_with_nothing_to_attend_to_is_refused():
    """lengths[b] = 0 and no tail: no token to attend to (0/0), refused instead of a NaN row."""
    query, prefix, _, _ = make_case(2, 1, 2, 40, 0, 64, 32, torch.float32, lengths=[40, 0])
    with pytest.raises(ValueError, match="no token to attend to"):
        decode_attn(query, prefix, None, None, 0.125, backend="torch")

