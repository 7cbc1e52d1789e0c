"""How fast can a kernel stream HBM into shared memory on this GPU, by copy mechanism? The decode kernels' question.

The SparK decode kernel reads its tiles with 16-byte ``cp.async`` copies and streams at ~4.2 TB/s, where cuDNN's dense
decode reaches 4.5-4.6 TB/s (BENCHMARKS.md). This script measures the ceiling of each way to fill shared memory,
with no attention math in the way, so that the gap can be put on the copy mechanism or elsewhere:

* ``cp.async``: every thread copies 16-byte chunks of a tile and reads back its own chunks (each thread waits on
  its own copies, the cheapest synchronisation there is), ``STAGES`` tiles in flight per block;
* ``bulk``: one producer warp issues ``cp.async.bulk`` copies (the Tensor Memory Accelerator) of ``CHUNK`` bytes into a
  ring of ``STAGES`` tiles, completing on mbarriers; four consumer warps read each tile and release it. ``CHUNK`` =
  4 KB is the size of one 32-row x 128-byte box, what a 2-D tensor copy of a V tile would move;
* ``warp tiles`` (the decode kernels' granularity): every warp streams its own 8 KB tiles (a 32-token V tile at
  D = 128) through 1-3 buffers of its own, 4 warps per block, 2-3 blocks per multiprocessor, the tiles interleaved
  over the grid or each block taking one contiguous chunk (the split-K pattern). One buffer per warp, 4 warps, 3
  blocks is the SparK kernel's V pipeline at λ = 0.8.

Each configuration reads a 4 GiB random buffer once per launch (tiles interleaved over the blocks), median of 15
launches timed with CUDA events. Before timing, every kernel's XOR of the words it read is checked against NumPy's
on a 96 MiB buffer, so a kernel that skips data cannot be timed. The torch ``sum`` of the same buffer (the ceiling
quoted in the spec) is measured in the same run.

Then the best configuration of each mechanism reads exactly as many bytes as each Llama-head (D = 128) row of the
committed decode table (``results/decode_attention_h200.json``), timed as that table is (``common.bench_us``: CUDA
graph replays, L2 flushed by a read before each): the time a kernel that does nothing but stream those bytes needs,
launch and ramp included, against which the decode kernels' times can be read.

    PYTHONPATH=. python benchmarks/stream_ceiling.py   # -> benchmarks/results/stream_ceiling_h200.json
    PYTHONPATH=. python benchmarks/stream_ceiling.py --part warp --out FILE   # the warp tiles (and one reference)
"""

from __future__ import annotations

import ctypes
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS,
    bench_us,
    environment,
    markdown_table,
    parse_gpu_args,
    script_parser,
    write_json,
)

from sparkv.kernels.decode_attn import cuda  # noqa: E402

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__device__ __forceinline__ u32 xor4(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Tiles t = blockIdx.x + k * gridDim.x, k = 0, 1, ...: each block streams an interleaved share of the buffer.
extern "C" __global__ void __launch_bounds__(128) stream_cp_async(const char* __restrict__ src, long long tiles,
                                                                  u32* out) {
  extern __shared__ __align__(128) char smem[];
  constexpr int PER = TILE / (16 * 128);
  const u32 base = smem_addr(smem);
  u32 acc = 0;
  auto issue = [&](long long t, int slot) {
    if (t < tiles) {
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int off = (i * 128 + threadIdx.x) * 16;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(base + slot * TILE + off),
                     "l"(src + t * TILE + off) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  for (int s = 0; s < STAGES - 1; ++s) issue(blockIdx.x + (long long)s * gridDim.x, s);
  for (long long k = 0;; ++k) {
    const long long t = blockIdx.x + k * gridDim.x;
    if (t >= tiles) break;
    issue(t + (long long)(STAGES - 1) * gridDim.x, (int)((k + STAGES - 1) % STAGES));
    asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 1) : "memory");
    const int slot = (int)(k % STAGES);
#pragma unroll
    for (int i = 0; i < PER; ++i)
      acc ^= xor4(*reinterpret_cast<const uint4*>(smem + slot * TILE + (i * 128 + threadIdx.x) * 16));
  }
  atomicXor(out, acc);
}

// The decode kernels' granularity: every warp streams its own TILE-byte tiles through STAGES buffers of its own (its
// 32 lanes' 16-byte copies, one commit group per tile; STAGES = 1: the next copy is issued once the tile is read),
// WPB warps per block. CHUNKED = 0: warp tiles interleaved over the whole grid; 1: each block streams one contiguous
// chunk of the buffer, its warps taking turns within it (the split-K decode kernel's pattern).
extern "C" __global__ void __launch_bounds__(WPB * 32) stream_warp_tiles(const char* __restrict__ src,
                                                                         long long tiles, u32* out) {
  extern __shared__ __align__(128) char smem[];
  constexpr int PER = TILE / (16 * 32);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const u32 base = smem_addr(smem + warp * STAGES * TILE);
  long long first, step, last;
  if (CHUNKED) {
    const long long per = (tiles + gridDim.x - 1) / gridDim.x;
    first = blockIdx.x * per + warp;
    step = WPB;
    last = min(tiles, (long long)(blockIdx.x + 1) * per);
  } else {
    first = (long long)blockIdx.x * WPB + warp;
    step = (long long)gridDim.x * WPB;
    last = tiles;
  }
  auto issue = [&](long long t, int slot) {
    if (t < last) {
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int off = (i * 32 + lane) * 16;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(base + slot * TILE + off),
                     "l"(src + t * TILE + off) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  for (int s = 0; s < STAGES - 1; ++s) issue(first + s * step, s);
  u32 acc = 0;
  for (long long k = 0;; ++k) {
    const long long t = first + k * step;
    if (t >= last) break;
    issue(t + (STAGES - 1) * step, (int)((k + STAGES - 1) % STAGES));
    asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 1) : "memory");
    const int slot = (int)(k % STAGES);
#pragma unroll
    for (int i = 0; i < PER; ++i)
      acc ^= xor4(*reinterpret_cast<const uint4*>(smem + (warp * STAGES + slot) * TILE + (i * 32 + lane) * 16));
  }
  atomicXor(out, acc);
}

__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}

// Warps 0-3 consume, warp 4 produces: lane 0 issues TILE / CHUNK bulk copies per tile on the tile's "full" barrier
// and waits on its "empty" barrier (one arrival per consumer warp) before refilling a slot.
extern "C" __global__ void __launch_bounds__(160) stream_bulk(const char* __restrict__ src, long long tiles,
                                                              u32* out) {
  extern __shared__ __align__(128) char smem[];
  __shared__ __align__(8) u64 bars[2 * STAGES];
  const u32 base = smem_addr(smem), full = smem_addr(bars), empty = full + 8 * STAGES;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(full + 8 * s) : "memory");
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 4;" ::"r"(empty + 8 * s) : "memory");
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == 4) {
    if (lane == 0) {
      for (long long k = 0;; ++k) {
        const long long t = blockIdx.x + k * gridDim.x;
        if (t >= tiles) break;
        const int slot = (int)(k % STAGES);
        if (k >= STAGES) mbar_wait(empty + 8 * slot, (u32)((k / STAGES - 1) & 1));
        u64 state;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;"
                     : "=l"(state) : "r"(full + 8 * slot), "r"(TILE) : "memory");
#pragma unroll
        for (int c = 0; c < TILE / CHUNK; ++c)
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                       ::"r"(base + slot * TILE + c * CHUNK), "l"(src + t * TILE + c * CHUNK), "r"(CHUNK),
                       "r"(full + 8 * slot) : "memory");
      }
    }
    return;
  }
  u32 acc = 0;
  for (long long k = 0;; ++k) {
    const long long t = blockIdx.x + k * gridDim.x;
    if (t >= tiles) break;
    const int slot = (int)(k % STAGES);
    mbar_wait(full + 8 * slot, (u32)((k / STAGES) & 1));
#pragma unroll
    for (int i = 0; i < TILE / (16 * 128); ++i)
      acc ^= xor4(*reinterpret_cast<const uint4*>(smem + slot * TILE + (i * 128 + threadIdx.x) * 16));
    __syncwarp();
    if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(empty + 8 * slot) : "memory");
  }
  atomicXor(out, acc);
}
"""

# (mechanism, tile bytes, stages, chunk bytes)
CONFIGS = ([("cp.async", tile, stages, 16) for tile in (8192, 16384) for stages in (2, 3, 4)]
           + [("bulk", tile, stages, chunk) for tile in (8192, 16384, 32768) for stages in (2, 3, 4)
              for chunk in (4096, tile)])
BLOCKS_PER_SM = (1, 2, 4)
WARP_PART_REFERENCE = ("cp.async", 16384, 3, 16)  # the block-level stream timed with --part warp
# Warp tiles: (tile bytes per warp, stages per warp, warps per block, blocks per SM, chunked). 8 KB = a 32-token V tile
# at D = 128; 4 warps x 3 blocks with one stage is the SparK kernel's V pipeline at λ = 0.8.
WARP_CONFIGS = [(8192, stages, 4, bps, chunked) for stages in (1, 2, 3) for bps in (2, 3) for chunked in (0, 1)]
SMEM_PER_SM = 227 * 1024


def kernel_name(mech: str) -> str:
    return {"cp.async": "stream_cp_async", "bulk": "stream_bulk", "warp tiles": "stream_warp_tiles"}[mech]


def kernel_source(tile: int, stages: int, chunk: int, warps_per_block: int = 4, chunked: int = 0) -> str:
    return (f"#define TILE {tile}\n#define STAGES {stages}\n#define CHUNK {max(chunk, 16)}\n"
            f"#define WPB {warps_per_block}\n#define CHUNKED {chunked}\n" + SOURCE)


def build(mech: str, tile: int, stages: int, chunk: int, warps_per_block: int = 4, chunked: int = 0):
    """(kernel, threads, dynamic shared memory bytes)."""
    from torch.cuda import _utils as cuda_utils

    name = kernel_name(mech)
    major, minor = torch.cuda.get_device_capability()
    cubin = cuda.nvrtc_compile(kernel_source(tile, stages, chunk, warps_per_block, chunked), name,
                               f"sm_{major}{minor}", cuda_utils._get_nvrtc_library())
    kern = cuda_utils._cuda_load_module(cubin, [name])[name]
    smem = tile * stages * (warps_per_block if mech == "warp tiles" else 1)
    kern.set_shared_memory_config(smem)
    threads = {"cp.async": 128, "bulk": 160, "warp tiles": 32 * warps_per_block}[mech]
    return kern, threads, smem


def run(kern, threads: int, smem: int, buf: torch.Tensor, tile: int, grid: int, out: torch.Tensor,
        zero: bool = True) -> None:
    if zero:  # the XOR check needs it; timed steps skip it (a memset in the graph would be timed too)
        out.zero_()
    args = [ctypes.c_void_p(buf.data_ptr()), ctypes.c_longlong(buf.numel() // tile), ctypes.c_void_p(out.data_ptr())]
    cuda._launch(kern.func, (grid, 1), threads, smem, buf.device, args)


def main() -> None:
    p = script_parser(__doc__, RESULTS / "stream_ceiling_h200.json")
    p.add_argument("--gib", type=float, default=4.0, help="buffer size in GiB (default 4)")
    p.add_argument("--part", choices=("all", "block", "warp"), default="all",
                   help="block: block-level streams only; warp: the per-warp tiles (plus one block-level reference); "
                        "all (default): both, then the decode table's byte counts")
    p.add_argument("--table", type=Path, default=RESULTS / "decode_attention_h200.json",
                   help="decode table whose byte counts are streamed (default: the committed one)")
    args = parse_gpu_args(p, "stream_ceiling.py")
    major, _ = torch.cuda.get_device_capability()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    big = torch.randint(-2**31, 2**31 - 1, (int(args.gib * 2**30) // 4,), dtype=torch.int32, device="cuda")
    big = big.view(torch.uint8)
    small = big[: 96 * 2**20]
    expect = int(np.bitwise_xor.reduce(small.view(torch.int32).cpu().numpy().view(np.uint32)))
    out = torch.zeros(1, dtype=torch.int32, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def median_us(fn, reps: int = 15) -> float:
        fn()
        times = []
        for _ in range(reps):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    def check(kern, threads: int, smem: int, tile: int, grid: int, what: str) -> None:
        run(kern, threads, smem, small, tile, grid, out)
        got = int(out.item()) & 0xFFFFFFFF
        if got != expect:
            raise SystemExit(f"{what}: XOR {got:#x} != NumPy's {expect:#x}: the kernel did not read every word once")

    bf16 = big.view(torch.bfloat16)
    rows = [dict(mechanism="torch sum (bf16)", tile=None, stages=None, chunk=None, blocks_per_sm=None,
                 us=median_us(lambda: bf16.sum()))]
    configs = [c for c in CONFIGS if (c[0] == "cp.async" or major >= 9)
               and (args.part in ("all", "block") or c == WARP_PART_REFERENCE)]
    for mech, tile, stages, chunk in tqdm(configs, desc="configs"):
        kern, threads, smem = build(mech, tile, stages, chunk)
        for bps in BLOCKS_PER_SM:
            if bps * (smem + 1024) > SMEM_PER_SM:
                continue
            grid = sms * bps
            check(kern, threads, smem, tile, grid, f"{mech} tile={tile} stages={stages} chunk={chunk} bps={bps}")
            us = median_us(functools.partial(run, kern, threads, smem, big, tile, grid, out))
            rows.append(dict(mechanism=mech, tile=tile, stages=stages, chunk=chunk, blocks_per_sm=bps, us=us))
    for tile, stages, wpb, bps, chunked in tqdm(WARP_CONFIGS if args.part in ("all", "warp") else [],
                                                 desc="warp tiles"):
        kern, threads, smem = build("warp tiles", tile, stages, 16, wpb, chunked)
        if bps * (smem + 1024) > SMEM_PER_SM:
            continue
        grid = sms * bps
        check(kern, threads, smem, tile, grid, f"warp tiles tile={tile} stages={stages} wpb={wpb} bps={bps}")
        us = median_us(functools.partial(run, kern, threads, smem, big, tile, grid, out))
        rows.append(dict(mechanism="warp tiles", tile=tile, stages=stages, chunk=16, blocks_per_sm=bps, us=us,
                         warps_per_block=wpb, chunked=chunked))
    for r in rows:
        r["bytes"] = big.numel()
        r["tbps"] = big.numel() / r["us"] / 1e6
        r["in_flight_kib_per_sm"] = None if r["tile"] is None else \
            r["tile"] * r["stages"] * r["blocks_per_sm"] * r.get("warps_per_block", 1) / 1024
    best = {m: max((r for r in rows if r["mechanism"] == m), key=lambda r: r["tbps"])
            for m in ("cp.async", "bulk") if any(r["mechanism"] == m for r in rows)}
    sized = []
    table = json.loads(args.table.read_text()) if args.table.exists() else {"rows": []}
    sizes = sorted({r["bytes"] for r in table["rows"] if r["head_dim"] == 128}) if args.part == "all" else []
    for nbytes in tqdm(sizes, desc="sizes"):
        for mech, r in best.items():
            kern, threads, _ = build(mech, r["tile"], r["stages"], r["chunk"])
            n = nbytes // r["tile"] * r["tile"]  # whole tiles: at most one tile (<= 32 KiB) short
            part = big[:n]
            grid = sms * r["blocks_per_sm"]
            us = bench_us(functools.partial(run, kern, threads, r["tile"] * r["stages"], part, r["tile"], grid, out,
                                            zero=False), flush="read")
            sized.append(dict(mechanism=mech, tile=r["tile"], stages=r["stages"], chunk=r["chunk"],
                              blocks_per_sm=r["blocks_per_sm"], bytes=n, us=us, tbps=n / us / 1e6,
                              table_rows=[{k: t[k] for k in ("context", "batch", "key_ratio", "us", "sdpa_cudnn_us",
                                                             "sdpa_flash_us")}
                                          for t in table["rows"] if t["head_dim"] == 128 and t["bytes"] == nbytes]))
    command = "PYTHONPATH=. python benchmarks/stream_ceiling.py"
    command += "" if args.part == "all" else f" --part {args.part}"
    payload = dict(environment(), command=command, rows=rows,
                   at_table_sizes=sized)
    write_json(args.out, payload)
    print(markdown_table(sized, [("mechanism", "mechanism", ""), ("bytes", "bytes", ""), ("us", "µs", ".1f"),
                                 ("tbps", "TB/s", ".2f")]))
    rows.sort(key=lambda r: -r["tbps"])
    print(markdown_table(rows[:20] if args.part != "warp" else rows,
                         [("mechanism", "mechanism", ""), ("tile", "tile B", ""), ("stages", "stages", ""),
                          ("chunk", "copy B", ""), ("warps_per_block", "warps/block", ""),
                          ("chunked", "chunked", ""), ("blocks_per_sm", "blocks/SM", ""), ("us", "µs", ".0f"),
                          ("tbps", "TB/s", ".2f")]))
    for mech in ("cp.async", "bulk"):
        best = max((r for r in rows if r["mechanism"] == mech), key=lambda r: r["tbps"], default=None)
        if best:
            print(f"best {mech}: {best['tbps']:.2f} TB/s (tile {best['tile']}, stages {best['stages']}, "
                  f"copy {best['chunk']} B, {best['blocks_per_sm']} blocks/SM)")


if __name__ == "__main__":
    main()
