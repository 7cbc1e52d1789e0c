"""The SparK decode split kernel in CUDA C++ (``spark_walk.cu``), compiled at run time with NVRTC.

Why a second kernel: the Triton kernel rebuilds every key channel and is bound by issuing those instructions
(BENCHMARKS.md); this one costs per kept entry and puts the recovery on the tensor cores (the ``.cu`` file's header
says how). Triton cannot express its per-lane gathers from a shared-memory table, so it is CUDA C++; NVRTC ships
with PyTorch's CUDA wheels, so no toolkit is needed. It writes the same split partials as the Triton split kernel;
on eager steps its last block per KV head merges them, in CUDA graphs the Triton combine kernel does.

It runs on sm_80+ GPUs only (no CPU interpreter): tests compare it with the PyTorch reference on the GPU.
"""

from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

import torch

from sparkv.cache.layout import Prefix, SparKKeys, SparKPages, num_words, tile_record
from sparkv.kernels.autotune import cdiv, launch_device, num_sms
from sparkv.kernels.decode_attn.reference import check_scaling

SOURCE = Path(__file__).with_name("spark_walk.cu").read_text()
KERNEL_NAME = "spark_walk_split"
_RECOVERY = {"mean": 0, "mean_linear": 0, "zero": 1, "constant": 2}
LOG2E = 1.4426950408889634
# (defines, device index) -> (kernel, dynamic shared memory bytes, resident blocks per multiprocessor)
_COMPILED: dict[tuple, tuple[object, int, int]] = {}
# (defines, device index) -> why the build failed (not retried on every decode step)
_FAILED: dict[tuple, str] = {}
# Launch parameters (H200 sweeps, BENCHMARKS.md "Session 7", "Session 8", "Session 11" and "Session 20"): 4-warp
# blocks, two walks per token, one wave of blocks, two stages of small-array buffers, registers capped at 200 a thread
# (with registers=0, __launch_bounds__ caps them for min_blocks resident blocks). One stage (less shared memory) lets
# 3 blocks fit at λ = 0.5 but is up to 15% slower; two waves were slower; double-buffered V tiles cost resident
# blocks. The register cap changes no occupancy (two 4-warp blocks fit 255 registers a thread) but the compiler's
# schedule where the walk wants more than 200 (λ <= 0.5 at D = 128): 1.01-1.18x over 255 on pages and arrays, bf16
# and fp16, 4 and 8 query heads a KV head. 200 was 0.99-1.09x as fast as 168 (min_blocks=3) with this source, and 168
# 0.83x as fast as 255 after a small change to it (an unused split parameter); caps of 184-192 fell off at 128K·b8.
# Where only one 4-warp block fits a multiprocessor, launch_params takes one 8-warp block instead (lone_block, session
# 16), and so it does where kept rows are short (short_kept_block, session 25); where neither fits twice (D = 256) it
# takes one 7- or 6-warp block with one stage where the kept term is long (wide_lone_block, session 33), else the
# 4-warp block alone, all of these with no cap (200 was 0.86-0.99x there).
# Nor is the cap kept where ptxas reports that it adds a stack frame (without_added_spills): with 4-byte words DK = 100
# and 108, and pages at DK = 52, spilled under it; since kept rows of DK = 4 mod 8 are read as 8-byte units (KV_MODE
# 3) no build at D = 64 or 128 does (sm_90, bf16, 4 and 8 query heads a KV head), so the check is a guard.
DEFAULTS = dict(warps=4, min_blocks=2, chains=2, waves=1, stages=2, registers=200)
# Shared memory the driver keeps per resident block on sm_80/sm_90 (cudaDevAttrReservedSharedMemoryPerBlock).
RESERVED_SMEM_PER_BLOCK = 1024
# What the last call launched (benchmarks record it per row).
LAST_LAUNCH: dict = {}


def parse_launch(text: str, allowed) -> dict[str, int]:
    """``"warps=8,stages=1"`` -> ``{"warps": 8, "stages": 1}``, for command lines (benchmarks, scripts); a key outside
    ``allowed`` or a value that is not an integer raises ``ValueError`` naming both."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            key = None
        if key not in allowed:
            raise ValueError(f"expected K=V with K in {sorted(allowed)} and V an integer, got {item!r}")
    return out


def supported(prefix: Prefix, group: int) -> str | None:
    """Why the CUDA kernel cannot take this prefix (None when it can)."""
    if isinstance(prefix, SparKPages):  # pages hold only what the kernel reads (layout.PAGED_RECOVERIES)
        head_dim, recovery, dtype, scale_dtype = prefix.head_dim, prefix.recovery, prefix.dtype, prefix.dtype
    else:
        keys = prefix.keys
        if not isinstance(keys, SparKKeys):
            return f"key layout {type(keys).__name__}"
        head_dim, recovery, dtype = keys.head_dim, keys.recovery, keys.kept_values.dtype
        scale_dtype = dtype if keys.scale is None else keys.scale.dtype
    if prefix.num_tokens == 0:
        return "an empty prefix"
    if recovery not in _RECOVERY:
        return f"recovery {recovery!r}"
    if head_dim not in (64, 128, 256):
        return f"head_dim {head_dim} (needs 64, 128 or 256)"
    if group > 8:
        return f"{group} query heads per KV head (needs <= 8)"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {dtype}"
    if scale_dtype != dtype:
        return f"scale dtype {scale_dtype} (the kernel reads it in the kept values' dtype)"
    return None


def _kept(prefix: Prefix) -> tuple[int, str, float]:
    """``(kept channels, recovery, constant)`` of a SparK prefix in either form."""
    keys = prefix if isinstance(prefix, SparKPages) else prefix.keys
    return keys.kept, keys.recovery, float(keys.constant)


def walk_depth(words: int, other_bits: int) -> int:
    """Nonempty bitmap words a kept walk can reach when the other walk takes ``other_bits`` of the token's kept bits
    (every token has exactly DK): a walk needs its n-th word only if the words before it hold fewer bits than it
    takes, so the words from the n-th on hold more than ``other_bits``, at most 32 each; hence
    ``n <= words + 1 - ceil((other_bits + 1) / 32)``. The register queue (spark_walk.cu, Walk) keeps that many words:
    at D = 128 and DK = 64, 3 of 4, two SELs fewer a step."""
    return min(words, words + 1 - (other_bits + 32) // 32)


def kept_mma(head_dim: int, kept: int, group: int) -> int:
    """Whether the tensor cores take the kept term instead of the walk (spark_walk.cu, KEPT_MMA): 0 the walk; 1 A in
    registers and a table of selectors (D = 128, ``kept`` % 8 == 0 only); 2 A from shared memory, selectors computed.

    The walk costs per kept entry and query head, and more where the kept rows are odd (read per entry) or padded; the
    MMA costs per channel whatever the heads. Whole steps on pages, one H200, against the walk (BENCHMARKS.md "Session
    26", "Session 27" and "Session 31"): 5-8 query heads a KV head at D = 128, mode 1 1.11-1.63x at λ = 0.5
    (``kept`` % 8 == 0), mode 2 1.25-2.36x for ``kept`` of 45-90 otherwise (0.94x at 26; measured with 8), and since
    the tile's scales are copied (RS_SMEM) 1.09-1.18x at 26 and 1.57x at 39 ("Session 33"; 0.89x at 13); 1-4 at
    D = 128, mode 2 1.01-1.28x for odd ``kept`` of 65-103 and at 96, and, since the tile's scales are copied with its
    small arrays (RS_SMEM), at the even ones of 66-94 as well: 1.03-1.14x with 4 query heads, 0.995-1.034x with 1-2
    (0.88-0.90x at 64, so the walk keeps λ = 0.5); D = 256 with 2 and 4, 1.17-1.24x for ``kept`` of 160-192 and, with
    the copy, 1.27x at 144 (0.97-0.99x at 128) and 1.15-1.17x at 130 and 136 ("Session 32"), with 5-8, 1.10-1.62x at
    every ``kept`` measured, 32-136 (where the block fits: :func:`defines_within`); D = 64 with 3 (SmolLM2's
    heads), with the copy, 1.08x at 40 and 1.15x at 48 (0.98x at 32; 0.91-0.98x before the copy); with 1-2, 1.07x at
    48 (0.99-1.00x at 40); with 5-8 (Qwen2.5-0.5B's 7 among them), 1.09-1.96x at every ``kept`` measured, 13-48
    ("Session 32": there the walk's GQ = 8 q table made it slower than SDPA). Between the measured points (``kept`` of
    14-25 with 5-8, 97-128 with 1-4 at D = 128, 41-47 with 1-2 at D = 64) the rule follows its neighbours.
    """
    if head_dim == 128 and group > 4:
        return 1 if kept % 8 == 0 else 2 if kept > 20 else 0
    if head_dim == 128:
        return 2 if kept >= 65 else 0
    if head_dim == 256:
        return 2 if group > 4 or kept > 128 else 0
    if head_dim == 64:
        return 2 if group > 4 or kept > (32 if group >= 3 else 40) else 0
    return 0


def defines(head_dim: int, kept: int, group: int, recovery: str, dtype: torch.dtype, warps: int = 4,
            min_blocks: int = 1, chains: int = 2, stages: int = 2, records: bool = False,
            registers: int = 0, kept_on_tensor_cores: bool = True) -> dict[str, int]:
    """The kernel's compile-time constants; ``records``: it reads :class:`SparKPages` (offsets from
    :func:`~sparkv.cache.layout.tile_record`) instead of separate arrays; ``registers``: a cap per thread
    (``__maxnreg__``, MAXNREG) where it is below the one ``min_blocks`` blocks of ``warps`` warps imply
    (``__launch_bounds__``, :func:`implied_registers`); 0: that one. The kept rows' copy mode (KV_MODE) follows
    from ``kept``, the kept walk's word list (WALK_LIST) from ``head_dim``, ``warps`` and ``group``, the words
    each walk's queue holds (DEPTH_TOP, DEPTH_BOT) from ``kept`` and ``chains`` (:func:`walk_depth`), whether the
    tensor cores take the kept term instead of the walk (KEPT_MMA) from ``head_dim``, ``kept`` and ``group``
    (:func:`kept_mma`) unless ``kept_on_tensor_cores`` is False, and with it whether pages copy each tile's scales
    with its small arrays (RS_SMEM), and, for the walk, whether the recovery's MMAs run inside its loop (REC_SPREAD:
    a recovery with MMAs, at most half the channels kept)."""
    # q-table columns: 2 for 1-2 query heads a KV head (1.00-1.05x up to D = 128: BENCHMARKS.md "Session 22"; at
    # D = 256, 1.06-1.21x over λ = 0.5-0.8 since session 32, 0.96-1.09x in session 22's kernel), else 4 or 8.
    gq = 2 if group <= 2 else 4 if group <= 4 else 8
    d = dict(D=head_dim, DK=kept, G=group, GQ=gq, REC=_RECOVERY[recovery],
             HALF=int(dtype == torch.float16), WARPS=warps, MINB=min_blocks, CHAINS=chains, STAGES=stages,
             KV_MODE=2 if kept % 8 == 0 else 3 if kept % 4 == 0 else (1 if kept % 2 == 0 else 0))
    bottom = kept // 2 if chains == 2 else 0  # the bottom walk's kept bits; the top walk takes the rest
    nw = num_words(head_dim)
    d.update(DEPTH_TOP=walk_depth(nw, bottom), DEPTH_BOT=walk_depth(nw, kept - bottom))
    if head_dim >= 256 and warps < 8 and group <= 4:
        # The kept walk's words from a list in shared memory (spark_walk.cu, Walk; 1.12-1.23x at D = 256). Not in
        # 8-warp blocks, nor with 8 q-table columns: there its 2.3 KB a warp would change the blocks that fit. The
        # 6- and 7-warp blocks of wide_lone_block keep it (their 7 warps only where it fits).
        d["WALK_LIST"] = 1
    if records:
        rec = tile_record(head_dim, kept, recovery, dtype)
        d.update(RECORDS=1, REC_BYTES=rec.nbytes, RKV_OFF=rec.kept_values, RKB_OFF=rec.kept_bits,
                 RSB_OFF=rec.kept_bits if rec.sign_bits is None else rec.sign_bits)
        if rec.scale is not None:
            d["RRS_OFF"] = rec.scale
    if 0 < registers < implied_registers(warps, min_blocks):
        d["MAXNREG"] = registers
    mode = kept_mma(head_dim, kept, group) if kept_on_tensor_cores else 0
    if mode:
        d["KEPT_MMA"] = mode
        d.pop("WALK_LIST", None)  # the MMA replaces the walk
        if "RRS_OFF" in d:
            # The tile's scales copied with its small arrays (spark_walk.cu, RS_SMEM): 1.02-1.19x here, where the next
            # tile's scale loaded into a register made the warps wait on it (BENCHMARKS.md "Session 31").
            d["RS_SMEM"] = 1
    elif recovery != "zero" and 2 * kept <= head_dim:
        # The recovery's MMAs spread over the walk's steps (spark_walk.cu: REC_SPREAD): 1.02-1.10x where a token keeps
        # at most half its channels, 0.98-0.99x with 80 and 90 of 128 (BENCHMARKS.md "Session 29").
        d["REC_SPREAD"] = 1
    return d


def without_walk_list_beyond(d: dict[str, int], limit: int) -> dict[str, int]:
    """``d``, or ``d`` with the register-queue walk where the list walk's buffers (WALK_LIST) would take the block
    past ``limit`` bytes of shared memory and the queue's would not (D = 256 at λ <= 0.2 on the H200)."""
    if d.get("WALK_LIST") and shared_bytes(d) > limit:
        queue = {k: v for k, v in d.items() if k != "WALK_LIST"}
        if shared_bytes(queue) <= limit:
            return queue
    return d


def defines_within(limit: int, *args, **kw) -> dict[str, int]:
    """:func:`defines` ``(*args, **kw)`` for a block of at most ``limit`` bytes of shared memory where it can be had:
    the scales loaded by each tile instead of copied with its small arrays where their 128 bytes a stage would
    (RS_SMEM), then the walk where the kept MMA's A operand (mode 2, D / 16 x 512 bytes) would take the block past it
    (D = 256 from DK = 211 with 1-2 query heads and 4 warps on the H200), then the register-queue walk where the list
    would (:func:`without_walk_list_beyond`). What fits neither way is left for the launcher to report."""
    d = defines(*args, **kw)
    if d.get("RS_SMEM") and shared_bytes(d) > limit:
        d.pop("RS_SMEM")
    if d.get("KEPT_MMA") == 2 and shared_bytes(d) > limit:
        d = defines(*args, **kw, kept_on_tensor_cores=False)
    return without_walk_list_beyond(d, limit)


def blocks_by_shared_memory(sm_bytes: int, block_bytes: int) -> int:
    """How many blocks of ``block_bytes`` of shared memory a multiprocessor of ``sm_bytes`` holds, the driver's
    reserve per block (:data:`RESERVED_SMEM_PER_BLOCK`) counted."""
    return sm_bytes // (block_bytes + RESERVED_SMEM_PER_BLOCK)


def a_operand_bytes(head_dim: int) -> int:
    """Bytes of one MMA A operand kept in shared memory for a block: D / 16 k-steps of 32 lanes' four registers
    (spark_walk.cu: KEPT_MMA 2's LUT_BYTES, QA_SMEM's QA_BYTES)."""
    return head_dim // 16 * 32 * 16


def with_query_operand_shared(d: dict[str, int], limit: int, sm_bytes: int) -> dict[str, int]:
    """``d`` with the recovery MMA's A operand (the query) read from shared memory (QA_SMEM, D / 16 x 512 bytes a
    block) at D = 128 where the block stays within ``limit`` bytes and as many blocks fit a multiprocessor of
    ``sm_bytes`` (0: unknown, not checked); else ``d``.

    From registers the compiler moved the operand into place with re-made zeros before every MMA (87 moves a tile at
    DK = 64); one 16-byte load a k-step takes 3-4 % fewer instructions a tile. Whole steps on pages, one H200, against
    the registers in the same run (BENCHMARKS.md "Session 28"): 32 query heads over 8 KV heads at D = 128, 1.002-1.037x
    at λ = 0.5 and 0.8 over 8K-128K tokens, batch 1 and 8 (but 0.996x at 32K·b8, λ = 0.5, in one of two runs); 64
    query heads, 1.019x at DK = 52 and 1.00x at 64; at D = 256 0.96x and at D = 64 0.99-1.01x, so not there."""
    if d["D"] != 128:
        return d
    shared = {**d, "QA_SMEM": 1}
    if shared_bytes(shared) > limit:
        return d
    if sm_bytes and (blocks_by_shared_memory(sm_bytes, shared_bytes(shared))
                     < blocks_by_shared_memory(sm_bytes, shared_bytes(d))):
        return d
    return shared


def implied_registers(warps: int, min_blocks: int) -> int:
    """Registers a thread that ``__launch_bounds__(32 * warps, min_blocks)`` leaves (65536 a multiprocessor on
    sm_80 / sm_90, allocated in 8s, at most 255)."""
    return min(255, 65536 // (32 * warps * min_blocks) // 8 * 8)


def shared_bytes(d: dict[str, int]) -> int:
    """Dynamic shared memory of one block (mirrors the .cu file's layout macros)."""
    nw, dkw = num_words(d["D"]), d["DK"] // 2
    if d["KV_MODE"] == 2:
        kvc = dkw // 4
        swizzled = kvc & (kvc - 1) == 0 and not d.get("KEPT_MMA")  # KV_SWIZZLE: unpadded
        unpadded = kvc % 2 or swizzled or d.get("KEPT_MMA") == 2
        kv_bytes = 32 * (kvc if unpadded else kvc + 1) * 16
    elif d["KV_MODE"] == 1:
        kv_bytes = 32 * (dkw if dkw % 2 else dkw + 1) * 4
    elif d["KV_MODE"] == 3:
        kv_bytes = 32 * d["DK"] * 2
    else:  # odd DK: the tile's contiguous bytes from the 16-byte boundary below them
        kv_bytes = cdiv(cdiv(64 * d["DK"] + 14, 16) * 16, 128) * 128
    small = kv_bytes + 2 * 32 * nw * 4 + (128 if d.get("RS_SMEM") else 0)  # RS_SMEM: the tile's scales
    return _fixed_bytes(d) + d["WARPS"] * (32 * d["D"] * 2 + d["STAGES"] * small)


def _fixed_bytes(d: dict[str, int]) -> int:
    """The q table, the warps' score buffers and their walk lists (``SMEM_FIXED``); the per-warp tile buffers follow
    them."""
    nw = num_words(d["D"])
    walk_list = 32 * (nw | 1) * 8 if d.get("WALK_LIST") else 0  # WL_STRIDE
    copies = 16 if d["GQ"] == 2 else 8  # QCOPIES
    lut = {1: 256, 2: a_operand_bytes(d["D"])}.get(d.get("KEPT_MMA", 0), 0)  # LUT_BYTES
    qa = a_operand_bytes(d["D"]) if d.get("QA_SMEM") else 0  # QA_BYTES
    return d["D"] * copies * d["GQ"] * 4 + d["WARPS"] * ((d["GQ"] + 1) * 32 * 4 + walk_list) + lut + qa


def nvrtc_compile(source: str, name: str, arch: str, lib: ctypes.CDLL) -> bytes:
    """CUBIN of ``source`` for ``arch`` (e.g. ``sm_90``) with the NVRTC library ``lib``; raises with the log."""
    return nvrtc_build(source, name, arch, lib, report=False)[0]


def nvrtc_version(lib: ctypes.CDLL) -> tuple[int, int]:
    """``(major, minor)`` of the NVRTC library ``lib``."""
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def nvrtc_options(arch: str, lib: ctypes.CDLL, report: bool) -> list[bytes]:
    """The options :func:`nvrtc_build` passes. With ``report``, ptxas's resource report (``-Xptxas=-v``) and, from
    NVRTC 12.9 on, ``--no-cache``: a build NVRTC finds in its cache (on a machine with a driver) returns without
    running ptxas and so without the report, and :func:`without_added_spills` would then keep a capped build that
    spills (session 28: on the H200 every process after the first that built one kept the 200 cap at DK = 96 with 4
    query heads and DK = 64 with 8, 3-4 % slower there). Without it the cache stays on (faster warm builds)."""
    opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", b"--extra-device-vectorization"]
    if report:
        opts.append(b"-Xptxas=-v")
        if nvrtc_version(lib) >= (12, 9):
            opts.append(b"--no-cache")
    return opts


def nvrtc_build(source: str, name: str, arch: str, lib: ctypes.CDLL, report: bool = True) -> tuple[bytes, str]:
    """``(CUBIN, log)`` of :func:`nvrtc_compile`; ``report``: with ptxas's resource report in the log
    (:func:`nvrtc_options`)."""
    prog = ctypes.c_void_p()

    def read_log() -> str:
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        return log.value.decode(errors="replace")

    def check(status: int, what: str) -> None:
        if status != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"NVRTC {what} failed: {lib.nvrtcGetErrorString(status).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None), "create")
    opts = nvrtc_options(arch, lib, report)
    arr = (ctypes.c_char_p * len(opts))(*opts)
    status = lib.nvrtcCompileProgram(prog, len(opts), arr)
    log = read_log()
    if status != 0:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        raise RuntimeError(f"NVRTC could not compile {name}:\n{log}")
    size = ctypes.c_size_t()
    check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "get CUBIN size")
    cubin = ctypes.create_string_buffer(size.value)
    check(lib.nvrtcGetCUBIN(prog, cubin), "get CUBIN")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return cubin.raw, log


def stack_frame_bytes(log: str, name: str = KERNEL_NAME) -> int | None:
    """The stack frame (local memory a thread spills or indexes) ptxas reports for kernel ``name`` in a
    :func:`nvrtc_build` log; None if the log has no report for it."""
    m = re.search(rf"Function properties for {re.escape(name)}\s*\n\s*ptxas\s*\.\s*(\d+) bytes stack frame", log)
    return None if m is None else int(m.group(1))


# (defines, arch) -> the build's stack frame in bytes (None: not reported), for without_added_spills.
_STACKS: dict[tuple, int | None] = {}
# (defines, arch) -> CUBIN built for the report above and not loaded yet: _kernel loads it instead of building again.
_UNLOADED: dict[tuple, bytes] = {}


def _stack(d: dict[str, int], arch: str, lib: ctypes.CDLL) -> int | None:
    key = (tuple(sorted(d.items())), arch)
    if key not in _STACKS:
        cubin, log = nvrtc_build(kernel_source(d), KERNEL_NAME, arch, lib)
        _STACKS[key], _UNLOADED[key] = stack_frame_bytes(log), cubin
    return _STACKS[key]


def without_added_spills(d: dict[str, int], arch: str, lib: ctypes.CDLL) -> dict[str, int]:
    """``d``, or ``d`` without its register cap (MAXNREG) when the capped build needs a larger stack frame than the
    uncapped one: the cap was measured to help where it changes only the schedule (session 20), and spills in the
    tile loop cost local-memory traffic on every tile (ptxas at sm_90, cap 200, kept rows as 4-byte words: pages at
    DK = 52 48 bytes, DK = 100 224 bytes against 16 uncapped; BENCHMARKS.md "Session 20"). Without ptxas's report
    for either, ``d``. The uncapped build is made only where the capped one has a stack frame; the build kept is the
    one the kernel loads."""
    if "MAXNREG" not in d:
        return d
    capped_stack = _stack(d, arch, lib)
    if not capped_stack:
        return d
    uncapped = {k: v for k, v in d.items() if k != "MAXNREG"}
    uncapped_stack = _stack(uncapped, arch, lib)
    kept, dropped = (uncapped, d) if uncapped_stack is not None and capped_stack > uncapped_stack else (d, uncapped)
    _UNLOADED.pop((tuple(sorted(dropped.items())), arch), None)  # the kernel will not load it
    return kept


def pip_nvrtc() -> ctypes.CDLL | None:
    """NVRTC from the ``nvidia-cuda-nvrtc`` wheel (the test extras), to compile the kernel on a machine without a GPU
    (tests, ``scripts/compile_sm90.py --cuda``); None when the wheel is not installed."""
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        libs = sorted(Path(root).glob("cu*/lib/libnvrtc.so*")) + sorted(Path(root).glob("cuda_nvrtc/lib/libnvrtc.so*"))
        for lib in libs:
            if "builtins" not in lib.name:
                return ctypes.CDLL(str(lib))
    return None


def kernel_source(d: dict[str, int]) -> str:
    """The source for defines ``d``; ``EXPECT_SMEM`` (default :func:`shared_bytes`) makes the build check that the
    launcher's shared-memory size is the kernel's own."""
    d = {"EXPECT_SMEM": shared_bytes(d), **d}
    return "".join(f"#define {k} {v}\n" for k, v in d.items()) + SOURCE


def combine_scratch_bytes(d: dict[str, int]) -> int:
    """Shared memory the in-kernel combine may use (the per-warp buffers, free by then)."""
    return shared_bytes(d) - _fixed_bytes(d)


def combine_fits(d: dict[str, int], slots: int) -> bool:
    """Whether the kernel can merge ``slots`` split partials itself (16 + slots * G floats of scratch)."""
    return 4 * (16 + slots * d["G"]) <= combine_scratch_bytes(d)


# (device index, stream handle) -> int32 counters of the in-kernel combine, one per KV head; every launch leaves them
# at zero. One buffer per stream, since launches on one stream never overlap.
_COUNTERS: dict[tuple[int, int], torch.Tensor] = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    if torch.cuda.is_current_stream_capturing():
        # Zeroed inside the graph, so that every replay starts from zero whatever ran before it.
        return torch.zeros(n, dtype=torch.int32, device=device)
    key = (device.index, torch.cuda.current_stream(device).cuda_stream)
    c = _COUNTERS.get(key)
    if c is None or c.numel() < n:
        c = _COUNTERS[key] = torch.zeros(max(n, 256), dtype=torch.int32, device=device)
    return c


def _kernel(d: dict[str, int], device: torch.device):
    key = (tuple(sorted(d.items())), device.index)
    if key not in _COMPILED:
        from torch.cuda import _utils as cuda_utils  # NVRTC and module loading as PyTorch itself uses them

        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise RuntimeError(f"the CUDA SparK kernel needs compute capability >= 8.0, got {major}.{minor}")
        with torch.cuda.device(device):
            arch = f"sm_{major}{minor}"
            cubin = _UNLOADED.pop((key[0], arch), None)
            if cubin is None:
                cubin = nvrtc_compile(kernel_source(d), KERNEL_NAME, arch, cuda_utils._get_nvrtc_library())
            kern = cuda_utils._cuda_load_module(cubin, [KERNEL_NAME])[KERNEL_NAME]
            smem = shared_bytes(d)
            kern.set_shared_memory_config(smem)
            resident = ctypes.c_int()
            status = cuda_utils._get_gpu_runtime_library().cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(resident), kern.func, ctypes.c_int(32 * d["WARPS"]), ctypes.c_size_t(smem))
            if status != 0 or resident.value < 1:
                raise RuntimeError(f"the CUDA SparK kernel cannot run with {smem} bytes of shared memory and "
                                   f"{32 * d['WARPS']} threads here (occupancy query: status {status}, "
                                   f"{resident.value} blocks)")
        _COMPILED[key] = (kern, smem, resident.value)
    return _COMPILED[key]


def _misaligned(prefix: Prefix) -> str | None:
    """Which array's address the kernel's cp.async copies cannot take (a view starting inside its storage), if any:
    V rows and 8-entry chunks of kept values go in 16-byte copies, bitmap rows in copies of up to 16 bytes."""
    if isinstance(prefix, SparKPages):
        return "pages at an address that is not 16-byte aligned" if prefix.pages.data_ptr() % 16 else None
    keys = prefix.keys
    words = num_words(keys.head_dim)
    need = [("values", prefix.values, 16), ("kept_bits", keys.kept_bits, min(16, 4 * words))]
    if keys.sign_bits is not None:
        need.append(("sign_bits", keys.sign_bits, min(16, 4 * words)))
    if keys.kept % 2 == 0:
        need.append(("kept_values", keys.kept_values, 16 if keys.kept % 8 == 0 else 8 if keys.kept % 4 == 0 else 4))
    for name, t, align in need:
        if t.is_contiguous() and t.data_ptr() % align:
            return f"{name} at an address that is not {align}-byte aligned"
    return None


def lone_block(block4: int, block8: int, sm_bytes: int, block_limit: int, rows: int, tokens: int, sms: int) -> bool:
    """Whether to launch one 8-warp block (``warps=8, min_blocks=1``) per multiprocessor instead of 4-warp blocks of
    ``block4`` bytes of shared memory: when only one of those fits a multiprocessor's ``sm_bytes``, the 8-warp
    block's ``block8`` bytes fit ``block_limit``, and ``rows`` (batch x KV heads) of ``tokens`` still make a block of
    256-token tiles for each of the ``sms`` multiprocessors. A lone 4-warp block has too few warps to cover DRAM
    latency (1.02-1.50x with 8 warps on the H200: D = 256 at λ = 0.9, D = 128 at λ = 0.1, and at λ = 0.3 with 8 query
    heads a KV head), but where the 8-warp tiles leave multiprocessors idle it lost (D = 256, λ = 0.9, 8K·b1: 0.83x),
    and where two 4-warp blocks fit, one 8-warp block was 0.89-1.03x (BENCHMARKS.md "Session 16")."""
    return (_fits_once(block4, sm_bytes)
            and _eight_warp_blocks_fill(block8, block_limit, rows, tokens, sms))


def _fits_once(block: int, sm_bytes: int) -> bool:
    """Whether exactly one block of ``block`` bytes of shared memory fits a multiprocessor of ``sm_bytes`` (0: the
    device did not say, so no)."""
    return 0 < blocks_by_shared_memory(sm_bytes, block) <= 1


def _eight_warp_blocks_fill(block8: int, block_limit: int, rows: int, tokens: int, sms: int) -> bool:
    """What both reasons for one 8-warp block need: its ``block8`` bytes within ``block_limit``, and ``rows`` of
    ``tokens`` that make a block of 256-token tiles for each of the ``sms`` multiprocessors."""
    return block8 <= block_limit and _blocks_fill(8, rows, tokens, sms)


def _blocks_fill(warps: int, rows: int, tokens: int, sms: int) -> bool:
    """Whether ``rows`` of ``tokens`` make a block of ``warps`` 32-token tiles for each of the ``sms``
    multiprocessors."""
    return rows * cdiv(tokens, warps * 32) >= sms


def wide_lone_block(head_dim: int, kept: int, group: int, block4: int, sm_bytes: int) -> bool:
    """Whether to launch one block of 7 or 6 warps with one stage of small-array buffers where a 4-warp block of
    ``block4`` bytes fits a multiprocessor of ``sm_bytes`` only once and :func:`lone_block` does not take 8 warps:
    at D = 256 where the tensor cores take the kept term (:func:`kept_mma`) or the walk's rows are long (a token keeps
    at least a quarter of its channels, λ <= 0.75). The launcher takes 7 warps where the walk keeps its word list
    (WALK_LIST), else 6, whichever first fits the device with the 4-warp block's kept term (KEPT_MMA) and gives every
    multiprocessor a block. A lone 4-warp block leaves each scheduler one warp (its 16 KB V tile a warp fills the
    shared memory) while the kept term is long; two stages matter less there than more warps. On the H200, whole
    steps on pages against the 4-warp block (BENCHMARKS.md "Session 33"): 2 query heads a KV head, the walk,
    1.09-1.26x at λ = 0.5 (6 warps) and 1.10-1.44x at λ = 0.6-0.7 (7 warps), 1.02-1.14x at 0.75; 4, 1.05x at
    λ = 0.5 and 1.08-1.13x at 0.6-0.75, 1.00x with one KV head (Gemma-3-1B's 4 / 1); the kept MMA (8 query heads,
    or 2 at λ 0.3-0.4), 1.15-1.20x (at λ = 0.8 with 8); but the walk at λ = 0.8 0.90-0.98x, so not where it keeps
    less than a quarter."""
    return (head_dim == 256 and (4 * kept >= head_dim or kept_mma(head_dim, kept, group) > 0)
            and _fits_once(block4, sm_bytes))


def short_kept_block(head_dim: int, kept: int, group: int, block8: int, block_limit: int, rows: int, tokens: int,
                     sms: int) -> bool:
    """Whether to launch one 8-warp block (``warps=8, min_blocks=1``) per multiprocessor instead of two 4-warp blocks
    where a token keeps at most a quarter of its ``head_dim`` channels (λ >= 0.75) and 2-4 query heads share a KV
    head, at D = 64 and 128: there a tile's kept term is short, so what a block pays once (its q table, its
    partial, its merge slots) weighs most, and one block a multiprocessor pays it half as often. On the H200 with
    pages, whole steps: 0.995-1.050x over 33 such cases (8K-128K tokens, batch 1-8; BENCHMARKS.md "Session 25"),
    0.993-1.048x in session 23's (on separate arrays, session 25's table's ratios to SDPA rose as on pages); with 8
    query heads a KV head 0.939-1.029x, so not there, and at λ = 0.6 / 0.7 0.870-1.010x / 0.957-1.022x, so not
    below a quarter either. Like :func:`lone_block`, it needs the 8-warp block to fit and to fill the multiprocessors
    (:func:`_eight_warp_blocks_fill`)."""
    return (head_dim in (64, 128) and 0 < 4 * kept <= head_dim and 2 <= group <= 4
            and _eight_warp_blocks_fill(block8, block_limit, rows, tokens, sms))


def launch_params(prefix: Prefix, group: int, dtype: torch.dtype, **kw) -> tuple[dict, dict, str | None]:
    """``(params, defines, why_not)`` for this case on its device: :data:`DEFAULTS` overridden by ``kw`` (checked),
    with 2-warp blocks when 4-warp ones would not fit the device's shared memory (large head_dim or group), and
    8-warp blocks when only one 4-warp block would fit a multiprocessor (:func:`lone_block`) or the kept rows are
    short (:func:`short_kept_block`), and else one 7- or 6-warp block with one stage where a 4-warp block fits once
    and the kept rows are long (:func:`wide_lone_block`). Unless ``registers`` is
    given, the register cap applies only to 4-warp blocks two of which fit a multiprocessor, and not where it would
    make the build spill (:func:`without_added_spills`: its build is the one loaded; where it has a stack frame, one
    more NVRTC build of the uncapped variant); elsewhere the cap is the one ``__launch_bounds__`` implies."""
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown CUDA kernel parameters {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **kw}
    if not isinstance(p["warps"], int) or isinstance(p["warps"], bool) or not 1 <= p["warps"] <= 8:
        raise ValueError(f"warps must be an integer in [1, 8], got {p['warps']!r}")
    for name in ("chains", "stages"):
        if p[name] not in (1, 2) or isinstance(p[name], bool):
            raise ValueError(f"{name} must be 1 or 2, got {p[name]!r}")
    for name in ("min_blocks", "waves"):
        if not isinstance(p[name], int) or isinstance(p[name], bool) or not 1 <= p[name] <= 32:
            raise ValueError(f"{name} must be an integer in [1, 32], got {p[name]!r}")
    r = p["registers"]
    if not isinstance(r, int) or isinstance(r, bool) or not (r == 0 or 64 <= r <= 255):
        raise ValueError(f"registers must be 0 (the cap min_blocks implies) or an integer in [64, 255], got {r!r}")
    why = supported(prefix, group)
    dev = prefix.device
    if why is None and dev.type != "cuda":
        why = f"device {dev} (needs CUDA)"
    if why is None and dtype != prefix.dtype:
        why = f"a {dtype} query over {prefix.dtype} keys (the kernel reads both as one 16-bit type)"
    if why is not None:
        return p, {}, why
    kept, recovery, _ = _kept(prefix)

    props = torch.cuda.get_device_properties(dev)
    limit = props.shared_memory_per_block_optin
    sm_bytes = getattr(props, "shared_memory_per_multiprocessor", 0)

    def make(warps: int, min_blocks: int | None = None, stages: int | None = None) -> dict:
        d = defines_within(limit, prefix.head_dim, kept, group, recovery, dtype, warps,
                           p["min_blocks"] if min_blocks is None else min_blocks, p["chains"],
                           p["stages"] if stages is None else stages,
                           records=isinstance(prefix, SparKPages), registers=p["registers"])
        return with_query_operand_shared(d, limit, sm_bytes)

    d = make(p["warps"])
    if shared_bytes(d) > limit and "warps" not in kw and p["warps"] > 2:
        p["warps"] = 2
        d = make(2)
    elif "warps" not in kw and "min_blocks" not in kw and p["warps"] == 4:
        wide = make(8, min_blocks=1)
        fill = (limit, prefix.batch * prefix.num_heads, prefix.num_tokens, props.multi_processor_count)
        block8 = shared_bytes(wide)
        if (lone_block(shared_bytes(d), block8, sm_bytes, *fill)
                or short_kept_block(prefix.head_dim, kept, group, block8, *fill)):
            p.update(warps=8, min_blocks=1)
            d = wide
        elif "stages" not in kw and wide_lone_block(prefix.head_dim, kept, group, shared_bytes(d), sm_bytes):
            for warps in (7, 6):
                one_stage = make(warps, min_blocks=1, stages=1)
                same_kept_term = all(one_stage.get(k) == d.get(k) for k in ("KEPT_MMA", "RS_SMEM"))
                if (shared_bytes(one_stage) <= limit and same_kept_term and (warps == 6 or one_stage.get("WALK_LIST"))
                        and _blocks_fill(warps, *fill[1:])):
                    p.update(warps=warps, min_blocks=1, stages=1)
                    d = one_stage
                    break
    # The register cap was measured on 4-warp blocks two of which fit a multiprocessor's shared memory; any other
    # block keeps __launch_bounds__'s cap unless registers is given.
    if "registers" not in kw and "MAXNREG" in d and (
            p["warps"] != 4 or blocks_by_shared_memory(sm_bytes, shared_bytes(d)) < 2):
        p["registers"] = 0
        d = make(p["warps"])
    if shared_bytes(d) > limit:
        why = (f"{shared_bytes(d)} bytes of shared memory per block with {p['warps']} warps "
               f"(this GPU allows {limit})")
    elif "MAXNREG" in d and "registers" not in kw:
        try:
            from torch.cuda import _utils as cuda_utils

            major, minor = torch.cuda.get_device_capability(dev)
            checked = without_added_spills(d, f"sm_{major}{minor}", cuda_utils._get_nvrtc_library())
        except (RuntimeError, OSError, AttributeError, ImportError):
            checked = d  # the build itself then reports what failed (_built)
        if checked is not d:
            p["registers"], d = 0, checked
    return p, d, why


_DRIVER: list = []  # [libcuda, cuLaunchKernel] once loaded


def _launch(func, grid: tuple[int, int], threads: int, smem: int, device: torch.device, args: list) -> None:
    """``cuLaunchKernel`` on the current stream with ``args`` (ctypes values in the kernel's parameter order).

    Direct, rather than through ``torch.cuda._utils._CudaKernel.__call__``: that wrapper looks the driver library up
    and converts every argument again on each call, host time an eager decode step pays once per layer."""
    if not _DRIVER:
        from torch.cuda import _utils as cuda_utils

        lib = cuda_utils._get_gpu_runtime_library()
        _DRIVER.extend([lib, lib.cuLaunchKernel])
    lib, launch = _DRIVER
    params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
    stream = torch.cuda.current_stream(device).cuda_stream
    status = launch(func, grid[0], grid[1], 1, threads, 1, 1, smem, ctypes.c_void_p(stream), params, None)
    if status != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorString(status, ctypes.byref(name))
        raise RuntimeError(f"launching the CUDA SparK kernel failed: {(name.value or b'?').decode()} ({status})")


def _built(d: dict[str, int], device: torch.device) -> str | None:
    """Compile (once) the kernel ``d`` on ``device``; why it cannot be built there (cached: not retried every
    decode step), or None."""
    key = (tuple(sorted(d.items())), device.index)
    if key not in _FAILED:
        try:
            _kernel(d, device)
        except (RuntimeError, OSError, AttributeError, ImportError) as e:  # no NVRTC, old GPU, a private API gone
            _FAILED[key] = f"NVRTC build failed: {e}"[:500]
    return _FAILED.get(key)


def build(prefix: Prefix, group: int, dtype: torch.dtype, **kw) -> str | None:
    """Compile (once) the kernel for this case; the reason it cannot run here, or None."""
    _, d, why = launch_params(prefix, group, dtype, **kw)
    return why if why is not None else _built(d, prefix.device)


# What try_plan decided per case (shapes, dtypes, layout, device): a model's decode steps repeat one case per layer,
# and resolving it again costs host time on every step of eager generation.
_PLANS: dict[tuple, tuple[dict, dict, str | None, int | None]] = {}


def try_plan(query: torch.Tensor, prefix: Prefix, scaling: float) -> tuple[SplitPlan | None, str | None]:
    """``(plan, None)`` when the kernel takes this step with its default launch, else ``(None, why)``. The decision
    and the split size are cached per case (the size reads the layout's bytes: 2.4 µs a call, ``timeit`` of
    ``CompressedKV.nbytes`` on the 2-core development CPU, 2026-11-29); only the arrays' alignment (a property of
    these tensors) is checked on every call."""
    if isinstance(prefix, SparKPages):
        layout = (SparKPages, prefix.kept, prefix.recovery)
    else:
        keys = prefix.keys
        layout = (type(keys), getattr(keys, "kept", None), getattr(keys, "recovery", None), keys.head_dim,
                  None if getattr(keys, "scale", None) is None else keys.scale.dtype)
    case = (tuple(query.shape), query.dtype, prefix.batch, prefix.num_heads, prefix.head_dim, prefix.num_tokens,
            prefix.dtype, prefix.device, layout)
    if case not in _PLANS:
        if len(_PLANS) >= 4096:  # a server sees a new prompt length per request: bound the cache, not the cases
            _PLANS.clear()
        p, d, why = launch_params(prefix, query.shape[1] // prefix.num_heads, query.dtype)
        d = with_query_rows(d, query, prefix)
        why = why or _built(d, prefix.device)
        chunk = None if why is not None else SplitPlan(query, prefix, scaling, _resolved=(p, d)).chunk
        _PLANS[case] = (p, d, why, chunk)
    p, d, why, chunk = _PLANS[case]
    why = why or _misaligned(prefix)
    return (None, why) if why is not None else (SplitPlan(query, prefix, scaling, chunk, _resolved=(p, d)), None)


# Split-size rule (H200 measurements: BENCHMARKS.md "Session 15" and "Session 16"). One block of 4 warps alone on a
# multiprocessor streams ~15 % slower than two, so a split leaving one block per multiprocessor counts its tokens this
# much more. More blocks per multiprocessor help only until they have enough bytes in flight to cover DRAM latency:
# a plain stream of per-warp tiles ran at its full rate with IN_FLIGHT_BYTES (64 KiB) in flight per multiprocessor
# (session 10, `stream_warp_tiles_h200.json`). Past that, fewer and longer blocks win, since each block pays its own
# set-up, end merge and partials: two blocks instead of three were 1.000-1.050x as fast for D = 128 at λ = 0.8 (88 KiB
# in flight with two), even at a 1.6 % higher load (128K·b1: 1.023x), three instead of four 0.995-1.060x for SmolLM2's
# D = 64 at λ = 0.8 (66 KiB); but two were 11 % slower for SmolLM2's D = 64 at λ = 0.5 (54 KiB with two) at a 2 %
# lower load. So among the splits within LOAD_MARGIN of the lowest load, the one with the most bytes in flight
# (counted up to IN_FLIGHT_BYTES) wins, then the fewest blocks per multiprocessor, the lowest load, the most blocks.
LONE_BLOCK_COST = 1.15
LOAD_MARGIN = 0.05
IN_FLIGHT_BYTES = 64 * 1024


@functools.lru_cache(maxsize=4096, typed=True)  # a model's decode steps ask the same question every layer
def balanced_chunk(tokens: int, rows: int, sms: int, wave: int, tile: int, tile_bytes: int) -> int:
    """Prefix tokens per split (a multiple of ``tile``) for ``rows`` (batch x KV heads) rows of ``tokens``, with at
    most ``wave`` blocks (one wave of resident blocks) when the rows allow it. ``tile_bytes``: the layout's bytes in
    one block's tiles (``tile`` tokens of one row), which is about what a block has in flight.

    The busiest multiprocessor's load is ``ceil(blocks / sms) * chunk`` tokens. Among the splits within
    :data:`LOAD_MARGIN` of the lowest load, the one with the most bytes in flight per multiprocessor (up to
    :data:`IN_FLIGHT_BYTES`) wins, then the fewest blocks per multiprocessor, the lowest load, the most blocks.
    Rounding ``tokens / splits`` up to whole tiles changes the number of splits and so how evenly the blocks fall: at
    32K tokens, batch 1, 8 KV heads, one wave of 396 blocks asks for 49 splits; whole tiles give 43 splits of 768
    tokens (344 blocks, three on most multiprocessors, load 2304), while 32 splits of 1024 (256 blocks, two on each,
    load 2048) were 7.7 % faster."""
    for name, x in (("tokens", tokens), ("rows", rows), ("sms", sms), ("wave", wave), ("tile", tile),
                    ("tile_bytes", tile_bytes)):
        if not isinstance(x, int) or isinstance(x, bool) or x < 1:
            raise ValueError(f"{name} must be a positive integer, got {x!r}")
    candidates = []
    for splits in range(1, max(1, min(cdiv(tokens, tile), wave // rows)) + 1):
        chunk = cdiv(cdiv(tokens, splits), tile) * tile
        blocks = rows * cdiv(tokens, chunk)
        per_sm = cdiv(blocks, sms)
        load = per_sm * chunk * (LONE_BLOCK_COST if per_sm == 1 and blocks < sms else 1.0)
        candidates.append((load, min(per_sm * tile_bytes, IN_FLIGHT_BYTES), -per_sm, blocks, chunk))
    lowest = min(c[0] for c in candidates)
    near = [(in_flight, fewer, -load, blocks, chunk) for load, in_flight, fewer, blocks, chunk in candidates
            if load <= lowest * (1 + LOAD_MARGIN)]
    return max(near)[4]


def query_rows(query: torch.Tensor, prefix: Prefix) -> int:
    """Query rows per prefix row (``R``): the kernel takes ``[B·R, HQ, 1, D]`` queries, row ``b·R + i`` reading prefix
    row ``b`` (the ``R`` query rows of a step of several new tokens, each one token or several folded into its heads:
    :func:`~sparkv.kernels.decode_attn.fused.decode_attn_triton`).
    """
    rows = query.shape[0]
    if prefix.batch == 0 or rows % prefix.batch:
        raise ValueError(f"the query's {rows} rows must be a multiple of the prefix's batch {prefix.batch}")
    return rows // prefix.batch


def with_query_rows(d: dict[str, int], query: torch.Tensor, prefix: Prefix) -> dict[str, int]:
    """``d`` with QROWS where query rows outnumber prefix rows: a build of its own, so that the one-token build stays
    instruction for instruction the measured one (spark_walk.cu, QROWS). Without the register cap (MAXNREG), which
    was measured on the one-token build: with it the QROWS build spills at D = 128 (NVRTC 13.5, sm_90)."""
    if query_rows(query, prefix) == 1:
        return d
    return {**{k: v for k, v in d.items() if k != "MAXNREG"}, "QROWS": 1}


class SplitPlan:
    """The CUDA kernel's split of one decode step over a SparK prefix: ``splits`` partials, written by
    :meth:`launch` into split slots ``0 .. splits-1`` of buffers shaped like the Triton split kernel's
    (``o_part [B*H, NS, G, D]``, ``lse_part [B*H, NS, G]``, float32; NS >= splits), so that a tail's splits can
    follow in the same buffers and one combine kernel merges them.

    ``chunk``: prefix tokens per split (a positive multiple of 32; default: :func:`balanced_chunk`, at most one wave
    of resident blocks, since a partial last wave leaves multiprocessors idle, spread evenly over the
    multiprocessors). ``kw`` overrides :data:`DEFAULTS`.
    """

    def __init__(self, query: torch.Tensor, prefix: Prefix, scaling: float, chunk: int | None = None,
                 _resolved: tuple[dict, dict] | None = None, **kw):
        b, hq, _, dd = query.shape
        if _resolved is None:  # try_plan's callers (decode_attn_triton) have checked it already
            check_scaling(scaling)
        self.rows_per_prefix_row = query_rows(query, prefix)
        self.query, self.prefix, self.scaling = query.contiguous(), prefix, float(scaling)
        self.h = prefix.num_heads
        self.group = hq // self.h
        if _resolved is not None:  # from try_plan: already checked
            p, d = _resolved
        else:
            p, d, why = launch_params(prefix, self.group, query.dtype, **kw)
            d = with_query_rows(d, query, prefix)
            why = why or _misaligned(prefix)
            if why is not None:
                raise ValueError(f"the CUDA SparK kernel does not support this case: {why}")
        self.kernel, self.smem, resident = _kernel(d, query.device)
        self.defines = d
        self.warps = p["warps"]
        s = prefix.num_tokens
        tile = 32 * self.warps
        if chunk is None:
            sms = num_sms(query.device.index)
            token_bytes = cdiv(prefix.nbytes(), prefix.batch * self.h * s)  # the layout's bytes per token and row
            chunk = balanced_chunk(s, b * self.h, sms, p["waves"] * resident * sms, tile, tile * token_bytes)
        elif not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 32 or chunk % 32:
            raise ValueError(f"chunk must be a positive multiple of 32, got {chunk!r}")
        self.chunk, self.splits = chunk, cdiv(s, chunk)
        LAST_LAUNCH.clear()
        LAST_LAUNCH.update(p, chunk=chunk, splits=self.splits, resident_blocks=resident)

    def launch(self, o_part: torch.Tensor, lse_part: torch.Tensor, out: torch.Tensor | None = None) -> None:
        """Write this plan's split partials; with ``out`` (``[B, HQ, 1, D]``, the query's dtype) the kernel also
        merges all ``NS`` slots of the buffers into ``out`` (the slots past its own must be written before, on this
        stream); check :meth:`can_combine` first."""
        prefix, dev = self.prefix, self.query.device
        b, _, _, dd = self.query.shape
        ns = o_part.shape[1]
        if o_part.shape != (b * self.h, ns, self.group, dd) or lse_part.shape != (b * self.h, ns, self.group) or \
                ns < self.splits or not (o_part.is_contiguous() and lse_part.is_contiguous()):
            raise ValueError(f"partials must be contiguous [B*H, NS >= {self.splits}, G, D] / [B*H, NS, G] buffers, "
                             f"got {tuple(o_part.shape)} / {tuple(lse_part.shape)}")
        if isinstance(prefix, SparKPages):  # one array: the kernel finds every field inside the records
            kv = kb = sb = r = v = prefix.pages
            u = prefix.u.float().contiguous() if prefix.u is not None else v
        else:
            keys = prefix.keys
            kv, kb = keys.kept_values.contiguous(), keys.kept_bits.contiguous()
            sb = keys.sign_bits.contiguous() if keys.sign_bits is not None else kb
            r = keys.scale.contiguous() if keys.scale is not None else kv
            u = keys.u.float().contiguous() if keys.u is not None else kv  # read by mean recovery only
            v = prefix.values.contiguous()
        lens = prefix.lengths.to(device=dev, dtype=torch.int32).contiguous()
        if out is not None:
            if out.shape != self.query.shape or out.dtype != self.query.dtype or not out.is_contiguous():
                raise ValueError(f"out must be a contiguous {tuple(self.query.shape)} {self.query.dtype} tensor, "
                                 f"got {tuple(out.shape)} {out.dtype}")
            if not self.can_combine(ns):
                raise ValueError(f"the kernel cannot merge {ns} split slots itself (see can_combine)")
        with launch_device(dev):
            counters = _counters(dev, b * self.h) if out is not None else lens
            pointers = [self.query, kv, kb, sb, r, u, v, lens, o_part, lse_part,
                        out if out is not None else self.query, counters]
            _launch(self.kernel.func, (self.splits, b * self.h), 32 * self.warps, self.smem, dev,
                    [ctypes.c_void_p(t.data_ptr()) for t in pointers]
                    + [ctypes.c_double(self.scaling * LOG2E), ctypes.c_double(_kept(prefix)[2])]
                    + [ctypes.c_int(x) for x in (prefix.num_tokens, self.chunk, ns, self.h, int(out is not None),
                                                 self.rows_per_prefix_row)])

    def can_combine(self, slots: int) -> bool:
        """Whether :meth:`launch` can merge ``slots`` split slots in the kernel (its shared memory bounds them)."""
        return combine_fits(self.defines, slots)

    def merges_itself(self, slots: int) -> bool:
        """Whether this step should merge its ``slots`` in the kernel: when they fit, and not while a CUDA graph is
        captured (the merge saves a launch, which costs the host time on eager steps only, and is 1-3 µs slower on
        the GPU than the combine kernel: BENCHMARKS.md, "Session 8")."""
        return self.can_combine(slots) and not torch.cuda.is_current_stream_capturing()

    def partials(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty ``(o_part, lse_part)`` buffers for this plan's splits alone."""
        b, _, _, dd = self.query.shape
        shape = (b * self.h, self.splits, self.group)
        return (torch.empty(*shape, dd, dtype=torch.float32, device=self.query.device),
                torch.empty(*shape, dtype=torch.float32, device=self.query.device))


def spark_split_partials(query: torch.Tensor, prefix: Prefix, scaling: float, chunk: int | None = None, **kw):
    """Split partials ``(o_part, lse_part, NS)`` of one query token over a SparK prefix in buffers of their own
    (:class:`SplitPlan` has the arguments)."""
    plan = SplitPlan(query, prefix, scaling, chunk, **kw)
    o_part, lse_part = plan.partials()
    plan.launch(o_part, lse_part)
    return o_part, lse_part, plan.splits


def decode_attn_cuda(query: torch.Tensor, prefix: Prefix, scaling: float, chunk: int | None = None,
                     combine: str = "auto", **kw) -> torch.Tensor:
    """One-token decode attention over a SparK prefix (no tail) with the CUDA split kernel; ``combine``:
    ``"kernel"`` (its last block per KV head merges the splits, when they fit its shared memory), ``"triton"``
    (the Triton combine kernel) or ``"auto"`` (the kernel's own merge except while a CUDA graph is captured: as
    :func:`~sparkv.kernels.decode_attn.fused.decode_attn_triton` does)."""
    if combine not in ("auto", "kernel", "triton"):
        raise ValueError(f"combine must be 'auto', 'kernel' or 'triton', got {combine!r}")
    plan = SplitPlan(query, prefix, scaling, chunk, **kw)
    o_part, lse_part = plan.partials()
    if combine == "auto":
        merge = plan.merges_itself(plan.splits)
    else:
        merge = combine == "kernel" and plan.can_combine(plan.splits)
    if merge:
        out = torch.empty_like(plan.query)
        plan.launch(o_part, lse_part, out)
        return out
    from sparkv.kernels.decode_attn.fused import combine_partials

    plan.launch(o_part, lse_part)
    with launch_device(query.device):
        return combine_partials(o_part, lse_part, query)
