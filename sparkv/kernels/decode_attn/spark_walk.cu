// SparK split-K decode attention, CUDA C++ compiled at run time by NVRTC (sparkv/kernels/decode_attn/cuda.py).
//
// Why not rebuild the key tile: the Triton kernel rebuilds every key channel (~11 instructions a channel, 44 of
// its 98 per token and KV head at D = 128) and is bound by issuing them. Here the kept term costs per *kept*
// entry, not per channel, and the recovery term goes through the tensor cores with an operand built from the bits:
//   kept     lane = token: walk the token's kept bitmap from the top (find-last-set, clear), and for the k-th
//            kept channel c add kept_values[t, k] * q[:, c] to G fp32 accumulators; q sits in shared memory
//            as a [D][QCOPIES][GQ] fp32 table, copy = lane % QCOPIES, so the lanes of a load phase (8 of 16-byte
//            loads, 16 of 8-byte ones at GQ = 2) never share a bank;
//            (where the walk costs more, an MMA per 16 channels instead: KEPT_MMA below);
//   recovery r_t * sum_pruned sign * (q*u): one m16n8k16 MMA per 16 channels and 8 tokens, M = query heads,
//            N = tokens, K = channels (any channel order works if q*u uses the same one); the B operand (+-2 on
//            pruned channels, 0 on kept ones, with q*u/2 as A) is built in registers from the kept and sign words
//            by one bit-select (LOP3), a rotation and a mask, 3 instructions a register (a 256-entry shared-memory
//            table instead was equal or up to 1.2% faster at λ = 0.5, slower at λ = 0.8: BENCHMARKS.md "Session 7");
//   softmax  in the MMA's accumulator layout (lane = (head g, tokens 2i, 2i+1)), which is also the B operand
//            layout of the P·V MMA (M = channels of V, N = heads, K = tokens; V^T from shared memory through
//            ldmatrix.trans, rows XOR-swizzled by 16-byte chunk), so probabilities never leave registers.
// Every warp owns its 32-token tiles and its online-softmax state; the warps of a block merge once at the end.
// Loads go through cp.async into per-warp buffers. Output: the same normalised partials and base-2
// log-sum-exps as the Triton split kernel, merged by its combine kernel, or (COMBINE) by this kernel's last block
// of each KV head (combine_if_last).
//
// Compile-time constants (defined by the launcher): D, DK, G, GQ (2, 4 or 8: q-table columns, >= G), REC (0 mean,
// 1 zero, 2 constant), HALF (0 bf16, 1 fp16), WARPS, MINB (blocks per multiprocessor to fit: caps registers unless
// MAXNREG, a cap per thread, is set),
// STAGES (1 or 2 buffers of the small arrays per warp), CHAINS (1 or 2 walks per token), REC_SPREAD (the recovery's
// MMAs inside the walk's loop: below), KV_MODE (how kept rows
// are copied and read: 2 = 16-byte chunks, DK % 8 == 0, into unpadded rows (swizzled where a row holds a power of two
// of them) or rows padded to an odd number of chunks; 3 = 8-byte
// units into unpadded rows (an odd number of units), DK % 8 == 4; 1 = 4-byte words into rows of an odd number of
// words, DK % 4 == 2; 0 = the tile's contiguous bytes as they are, copied in 16-byte chunks and read per entry, DK
// odd).

// RECORDS: 0 = separate arrays (CompressedKV); 1 = tile records (SparKPages, sparkv/cache/layout.py): every 32-token
// tile of a (row, KV head) one contiguous record [V | kept values | kept words | sign words | scales | zeros] of
// REC_BYTES bytes, ``v`` pointing at [B*H, ceil(S / 32), REC_BYTES] bytes; the fields' byte offsets RKV_OFF, RKB_OFF,
// RSB_OFF (RKB_OFF without signs) and RRS_OFF come from layout.tile_record. Only the copies' source addresses differ.
#ifndef RECORDS
#define RECORDS 0
#endif
// QROWS: query rows are R to a prefix row (see the kernel's start), for steps of several new tokens.
#ifndef QROWS
#define QROWS 0
#endif
#if RECORDS
// 16-byte copies of V rows and kept-value chunks, copies of up to 16 bytes of word rows, all from the record.
static_assert(REC_BYTES % 16 == 0 && RKV_OFF % 16 == 0 && RKB_OFF % 16 == 0 && RSB_OFF % 16 == 0,
              "tile record fields must start on 16-byte boundaries (layout.tile_record)");
#endif

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define NW (D / 32)
#define KS (D / 16)
#define DKW (DK / 2)
#define ALL_LANES 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)
// KEPT_MMA (set by the launcher where the walk costs more: cuda.kept_mma): the kept term on the tensor cores instead
// of the walk, whose cost grows with the heads (GQ FMAs a kept entry) and with the kept entries, while an MMA takes up
// to 16 heads at once and costs per channel. M = query heads, N = tokens, K = channels, A = q in its own dtype
// (exact); each lane builds its B registers for its token and its quarter of the channels, four channels (a nibble)
// a k-step: the nibble's kept values are 0-4 consecutive entries of the token's kept row from the nibble's rank, read
// as a 4-value window (three 32-bit loads and two funnel shifts) and spread to their channels by two byte permutes.
//   1: D = 128, DK % 8 == 0 (5-8 query heads a KV head): A in registers, the permutes' selectors and mask from a
//      16-entry table in shared memory, kept rows padded (not swizzled, for plain addresses); 1.11-1.63x over the
//      walk with 6 and 8 query heads a KV head at λ = 0.5 (BENCHMARKS.md "Session 26");
//   2: any D and DK: A read from shared memory per k-step (16 registers fewer, so that it fits the 200-register cap),
//      the selectors computed, kept rows unpadded.
// Where each mode runs, and what it measured against the walk, is cuda.kept_mma's rule and docstring.
#ifndef KEPT_MMA
#define KEPT_MMA 0
#endif
#if KV_MODE == 2
#define KVC (DKW / 4)
// A power-of-two number of 16-byte chunks a row: rows unpadded, chunk c of row r stored at c ^ kv_swizzle(r) (below 8
// and below KVC, so at KVC = 16 it permutes each half of the row), so that the copies of 8 lanes fill one aligned
// 128-byte line and the walk's reads of 8 lanes (one chunk of their own rows) hit 8 different bank groups. Rows padded
// to an odd number of chunks instead (still so for other even counts) made the copies straddle lines: Nsight Compute
// counted 13 % of the kernel's global sectors as excessive at DK = 64 (BENCHMARKS.md "Session 24"), the loss
// "Session 11" found for padded V rows.
#define KV_SWIZZLE (!KEPT_MMA && (KVC & (KVC - 1)) == 0)
#define KV_STRIDE16 ((KV_SWIZZLE || KVC % 2 || KEPT_MMA == 2) ? KVC : KVC + 1)
#define KV_BYTES (32 * KV_STRIDE16 * 16)
#elif KV_MODE == 1
#define KV_STRIDE_W ((DKW % 2) ? DKW : DKW + 1)
#define KV_BYTES (32 * KV_STRIDE_W * 4)
#elif KV_MODE == 3
// DK = 4 mod 8: rows of an odd number of 8-byte units, unpadded: 8-byte reads of them never share a bank.
#define KVU (DK / 4)
#define KV_BYTES (32 * KVU * 8)
#else
// Odd DK: the tile's rows as they are in global memory, copied in 16-byte chunks from the 16-byte boundary below
// them (up to 14 bytes before them). Rows of an odd number of words (KV_MODE 1, unpadded) were copied this way too,
// with fewer instructions, and took 4-5 % longer at λ = 0.8 (BENCHMARKS.md "Session 11"); here 4 % less (D = 64).
#define KV_CHUNKS ((64 * DK + 14 + 15) / 16)
// Rounded up to 128 bytes, so that every warp's buffers (and this stage's copies) start on a 128-byte line: with
// KV_CHUNKS * 16 alone, the V tiles of warps 1-3 sat 16-112 bytes off a line and their copies straddled lines, the
// loss "Session 11" found for padded V rows.
#define KV_BYTES (((KV_CHUNKS * 16 + 127) / 128) * 128)
#endif
// Copies of each q-table row: a phase of 16-byte loads serves 8 lanes, one of 8-byte loads (GQ = 2) 16.
#define QCOPIES (GQ == 2 ? 16 : 8)
#define QROW (QCOPIES * GQ * 4)  // one channel's row of the q table: QCOPIES fp32 copies of GQ heads
#define V_STRIDE (D * 2)  // bytes per V row in shared memory: unpadded (the chunks are swizzled, see load_v)
#define V_BYTES (32 * V_STRIDE)
#define W_BYTES (32 * NW * 4)
// RS_SMEM (set by the launcher on pages with per-token scales where the tensor cores take the kept term, if the block
// still fits: cuda.defines_within): a tile's 32 scales (64 bytes of its record) are copied with its small arrays, into
// 128 bytes after the sign words. Loaded into a register instead, the next tile's scale was converted a few
// instructions after its load and the warps waited there on DRAM: 19 % of KEPT_MMA 2's samples at 128K·b1, λ = 0.5;
// with the copy, 1.02-1.19x on the KEPT_MMA branches (BENCHMARKS.md "Session 31"). The walk hides that load (its
// conversion comes after the walk) and gained nothing from the copy ("Session 25").
#ifndef RS_SMEM
#define RS_SMEM 0
#endif
static_assert(!RS_SMEM || (RECORDS && REC == 0 && KEPT_MMA), "RS_SMEM: pages with per-token scales, KEPT_MMA only");
#if RS_SMEM
static_assert(RRS_OFF % 16 == 0, "RS_SMEM copies the tile record's scales in 16-byte chunks (layout.tile_record)");
#endif
#define RS_BYTES (RS_SMEM ? 128 : 0)
#define SMALL_BYTES (KV_BYTES + 2 * W_BYTES + RS_BYTES)
#define WARP_BYTES (V_BYTES + STAGES * SMALL_BYTES)
#define QTAB_BYTES (D * QROW)
#define KS_BYTES ((GQ + 1) * 32 * 4)
// WALK_LIST (set by the launcher at D = 256 with up to 4 warps and 4 query heads a KV head): a walk reads its
// token's kept words from a list in shared memory instead of shifting a queue of them in registers (Walk). The list:
// per warp, a row a lane, its token's nonempty kept words in channel order as (word, q-table offset) pairs; an odd
// number of 8-byte entries a row, so that the lanes' rows start on distinct bank pairs.
#ifndef WALK_LIST
#define WALK_LIST 0
#endif
#define WL_STRIDE (NW | 1)
#define WL_BYTES (WALK_LIST ? 32 * WL_STRIDE * 8 : 0)
// KEPT_MMA 1: the selectors' table; 2: the kept MMA's A operand, [KS][32] uint4.
#define LUT_BYTES (KEPT_MMA == 1 ? 256 : KEPT_MMA == 2 ? KS * 32 * 16 : 0)
// QA_SMEM (cuda.with_query_operand_shared): the recovery MMA's A operand in shared memory as its four registers
// {a0, 0, a2, 0} (one 16-byte load a k-step) instead of 16 registers, which the compiler moved into place with re-made
// zeros (~87 IMAD.MOVs a tile at DK = 64).
#ifndef QA_SMEM
#define QA_SMEM 0
#endif
#define QA_BYTES (QA_SMEM ? KS * 32 * 16 : 0)
// REC_SPREAD (set by the launcher where a token keeps at most half its channels: cuda.defines): the recovery's 4 KS
// k-steps of a tile run inside the walk's loop, spread evenly over its steps, instead of after the kept scores' store,
// so that every walk step carries independent MMA work into the stalls of its own dependency chain (1.02-1.10x at
// λ = 0.5-0.75, but 0.98-0.99x with 80-90 of 128 channels kept: BENCHMARKS.md "Session 29"). The sums are the same.
#ifndef REC_SPREAD
#define REC_SPREAD 0
#endif
#define SPREAD (REC_SPREAD && !KEPT_MMA && REC != 1)
#define LW (D >= 128 ? D / 128 : 1)  // the recovery's bitmap words a lane
#define SMEM_FIXED (QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES) + LUT_BYTES + QA_BYTES)
static_assert(KEPT_MMA != 1 || (KV_MODE == 2 && D == 128), "KEPT_MMA 1: D = 128, DK % 8 == 0");
static_assert(KEPT_MMA >= 0 && KEPT_MMA <= 2 && !(KEPT_MMA && WALK_LIST), "KEPT_MMA: 0-2, replaces the walk's list");
static_assert(SMEM_FIXED % 128 == 0 && WARP_BYTES % 128 == 0, "every warp's V tile must start on a 128-byte line");
#ifdef EXPECT_SMEM  // defined by the launcher: cuda.shared_bytes() must describe this layout
static_assert(SMEM_FIXED + WARPS * WARP_BYTES == EXPECT_SMEM, "cuda.shared_bytes() disagrees with spark_walk.cu");
#endif
// The warps' merge at the end reuses the per-warp buffers: [WARPS][8] maxima and sums, [WARPS][G][D] outputs.
static_assert((16 * WARPS + WARPS * G * D) * 4 <= WARPS * WARP_BYTES, "the block merge does not fit its buffers");

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ u32 rotl(u32 x, int n) { return __funnelshift_l(x, x, n); }
// ~(m ? a : b) bitwise, as one LOP3 (the compiler splits it into three).
__device__ __forceinline__ u32 not_select(u32 m, u32 a, u32 b) {
  u32 d;
  asm("lop3.b32 %0, %1, %2, %3, 0x1B;" : "=r"(d) : "r"(a), "r"(b), "r"(m));
  return d;
}

// The recovery MMA's B operand (+-2, bf16 0x4000 / 0xC000, on pruned channels, 0 on kept ones) for token tt's group
// (lane = (tt % 8, i4)). Bit 14 of a half: pruned (~kept); bit 15: pruned and negative (~(kept | sign)). yr holds
// (kept | sign) rotated left by one, so one bit-select takes channel c's two bits from c (kept word) and c + 1 (yr),
// one rotation moves them to 14-15 and 30-31, and a mask clears the rest: 3 instructions a register.
__device__ __forceinline__ void recovery_word(const u32* kws, const u32* sws, int tt, int i4, int m, u32& kw,
                                              u32& yr) {
  const int w = (i4 * KS) / 8 + m;
  const int sh = D >= 128 ? 0 : 4 * (i4 & 1);  // D = 64: two lanes share a word, this one's bits o = 4*(i4&1)+s
  const u32 k = kws[tt * NW + w] >> sh;
  kw = k;
  yr = rotl(k | (sws[tt * NW + w] >> sh), 1);
}

// Its registers for k-step s.
__device__ __forceinline__ void recovery_operand(const u32 (&kw)[LW], const u32 (&yr)[LW], int s, u32& b0, u32& b1) {
  const int m = D >= 128 ? s / 8 : 0, o = D >= 128 ? s % 8 : s;
  const u32 m0 = (1u << o) | (1u << (o + 16)), m1 = (1u << (o + 8)) | (1u << (o + 24));
  b0 = rotl(not_select(m0, kw[m], yr[m]), 14 - o) & 0xC000C000u;
  b1 = rotl(not_select(m1, kw[m], yr[m]), (6 - o) & 31) & 0xC000C000u;
}

// 16 bytes into dst: the first n (0-16) from src, the rest zero-filled; with n = 0 nothing is read and base (a valid
// address) is named instead.
__device__ __forceinline__ void cp_async16_zfill(u32 dst, const void* src, const void* base, int n) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(n ? src : base), "r"(n));
}

__device__ __forceinline__ void cp_async(u32 dst, const void* src, int ok, int nbytes) {
  // Rows past the split's end are zero-filled (src-size 0) from a valid address.
  if (nbytes == 16) {
    cp_async16_zfill(dst, src, src, ok ? 16 : 0);
  } else if (nbytes == 8) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 8 : 0));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 4 : 0));
  }
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void cp_wait2() { asm volatile("cp.async.wait_group 2;\n" ::); }

__device__ __forceinline__ float lo_to_f32(u32 w) {
#if HALF
  float f;
  asm("{ .reg .b16 h; mov.b32 {h, _}, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "r"(w));
  return f;
#else
  return __uint_as_float(w << 16);
#endif
}
__device__ __forceinline__ float hi_to_f32(u32 w) {
#if HALF
  float f;
  asm("{ .reg .b16 h; mov.b32 {_, h}, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "r"(w));
  return f;
#else
  return __uint_as_float(w & 0xffff0000u);
#endif
}
__device__ __forceinline__ float elt_to_f32(u16 h) { return lo_to_f32((u32)h); }

__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 pack_p(float lo, float hi) {  // probabilities in the values' dtype
  u32 r;
#if HALF
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}

__device__ __forceinline__ void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_pv(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if HALF
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  mma_bf16(c, a0, a1, a2, a3, b0, b1);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// cp.async of one 32-token tile. Every array's chunks are contiguous in global memory from the tile's first row
// (chunk e at src + e * chunk bytes), so the addresses are one base plus constants. ALL_ROWS: all 32 rows are valid;
// else chunks past the valid rows are zero-filled (src-size 0, from the tile's first chunk, a valid address).
template <bool ALL_ROWS>
__device__ __forceinline__ void load_v(u32 vs, const unsigned char* src, int valid, int lane) {
  // 16-byte chunk c of row r is stored at chunk c ^ (r % 8) of that row, so that ldmatrix's 8 rows (r % 8 = 0..7,
  // one logical chunk) hit 8 different bank groups. Unlike padded rows (V_STRIDE + 16, sessions 7-10), every 128
  // bytes a group of 8 lanes copies land in one aligned 128-byte line of shared memory: with padded rows half of the
  // copies straddled two lines, and L2 served every sector twice (Nsight Compute: L2 hit rate 34 % instead of
  // 0.8 %), so the V loads ran ~10 % below a plain stream (BENCHMARKS.md "Session 11").
  constexpr int VCH = D / 8;           // chunks per row; divides 32, so chunk lane + 32*i is row lane/VCH + i*RPI
  constexpr int RPI = 32 / VCH;        // rows per copy round
  constexpr int P = RPI >= 8 ? 1 : 8 / RPI;  // rounds after which row % 8 repeats
  const int r0 = lane / VCH, c = lane % VCH;
  u32 dst[P];
#pragma unroll
  for (int k = 0; k < P; ++k) dst[k] = vs + (r0 + RPI * k) * V_STRIDE + ((c ^ ((r0 + RPI * k) & 7)) * 16);
  const unsigned char* from = src + 16 * lane;
#pragma unroll
  for (int i = 0; i < VCH; ++i) {
    const bool ok = ALL_ROWS || lane + 32 * i < valid;
    cp_async(dst[i % P] + (i / P) * P * RPI * V_STRIDE, ok ? from + 512 * i : src, ok, 16);
  }
}

// Kept rows of a tile: N chunks of B bytes a row, into rows of STRIDE chunks (STRIDE odd, so that the lanes' reads of
// their own rows never share a bank). Unpadded (STRIDE == N), every destination is this lane's base plus a constant.
// SWIZZLE (N a power of two, rows of N chunks unpadded): chunk c of row r at c ^ kv_swizzle<N>(r), which spreads
// the rows of every 8 consecutive lanes over the 8 bank groups (16-byte units) whatever the row length.
template <int N>
__device__ __forceinline__ int kv_swizzle(int r) {
  return N >= 8 ? (r & 7) : ((r / (8 / N)) & (N - 1));
}
template <bool ALL_ROWS, int B, int N, int STRIDE, bool SWIZZLE = false>
__device__ __forceinline__ void load_rows(u32 dst, const unsigned char* src, int rows, int lane) {
  const unsigned char* from = src + B * lane;
  // Swizzled: copy i holds row lane / N + (32 / N) * i, chunk c = lane % N, so its place is c ^ kv_swizzle(row)
  // = c ^ s0 ^ k_i with s0 this lane's and k_i = ((32 / N) * i) & 7 a constant (0 for N <= 4): one base per k_i.
  const int c = lane % N, s0 = kv_swizzle<N>(lane / N);
  const u32 row_base = dst + B * (lane - c);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int e = lane + 32 * i;
    const bool ok = ALL_ROWS || e / N < rows;
    const int k_i = N >= 8 ? ((32 / N) * i) & 7 : 0;
    const u32 to = SWIZZLE         ? row_base + 32 * B * i + (u32)(B * (c ^ s0 ^ k_i))
                   : STRIDE == N ? dst + B * lane + 32 * B * i
                                 : dst + ((e / N) * STRIDE + e % N) * B;
    cp_async(to, ok ? from + 32 * B * i : src, ok, B);
  }
}

template <bool ALL_ROWS>
__device__ __forceinline__ void load_small(u32 kvs, const u16* kv_t, const u32* kb_t, const u32* sb_t,
                                           const unsigned char* rs_t, int rows, int lane) {
  const u32 kws = kvs + KV_BYTES, sws = kws + W_BYTES;
#if KV_MODE == 2
  load_rows<ALL_ROWS, 16, KVC, KV_STRIDE16, KV_SWIZZLE>(kvs, (const unsigned char*)kv_t, rows, lane);
#elif (KV_MODE == 3 || (KV_MODE == 1 && KV_STRIDE_W == DKW)) && RECORDS
  // Unpadded rows (KV_MODE 3, or DKW odd) in a tile record: shared memory holds the tile's rows as the record does,
  // so 16-byte chunks copy them with a quarter (a half) of the copies (the field starts 16-byte aligned, RKV_OFF; in
  // separate arrays a tile starts only 4-byte (8-byte) aligned unless S * DK is a multiple of 8); the chunks past the
  // valid rows' bytes are zero-filled, as load_rows does. Words: 1.16x at D = 128, DK = 90 and 1.04x at D = 64,
  // DK = 26; DK = 26 at D = 128 equal (BENCHMARKS.md "Session 20"). KV_MODE 3 against words: "Session 21".
  {
    const unsigned char* a0 = (const unsigned char*)kv_t;
    const int valid = rows * DK * 2;
#pragma unroll
    for (int i = 0; i < (4 * DK + 31) / 32; ++i) {
      const int e = lane + 32 * i;
      if (e < 4 * DK) {
        const int n = ALL_ROWS ? 16 : min(16, max(0, valid - 16 * e));
        // cp_async16_zfill's own copy, written out: through the helper ptxas scheduled the DK = 26 and 52 builds
        // differently (4-warp blocks, cap 200), and the measured builds keep their SASS.
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(kvs + 16 * e), "l"(n ? a0 + 16 * e : a0),
                     "r"(n));
      }
    }
  }
#elif KV_MODE == 3
  load_rows<ALL_ROWS, 8, KVU, KVU>(kvs, (const unsigned char*)kv_t, rows, lane);
#elif KV_MODE == 1
  load_rows<ALL_ROWS, 4, DKW, KV_STRIDE_W>(kvs, (const unsigned char*)kv_t, rows, lane);
#else
  // The tile's bytes from the 16-byte boundary below them (inside the same allocation: its base is aligned); the
  // last chunk may hold fewer valid bytes: src-size below 16 zero-fills the rest, nothing past the tile is read.
  const u64 a0 = (u64)kv_t, a16 = a0 & ~(u64)15;
  const int span = (int)(a0 & 15) + rows * DK * 2;  // bytes from a16 to the end of the tile's rows
#pragma unroll
  for (int i = 0; i < (KV_CHUNKS + 31) / 32; ++i) {
    const int e = lane + 32 * i;
    if (e < KV_CHUNKS) {
      const int n = min(16, max(0, span - 16 * e));
      cp_async16_zfill(kvs + 16 * e, (const void*)(a16 + 16 * e), (const void*)a16, n);
    }
  }
#endif
  constexpr int WB = NW * 4 >= 16 ? 16 : NW * 4;  // bytes per copy of the word rows
  constexpr int WPC = WB / 4;                     // words per copy
  const unsigned char* kb_src = (const unsigned char*)kb_t;
  const unsigned char* sb_src = (const unsigned char*)sb_t;
#pragma unroll
  for (int i = 0; i < NW / WPC; ++i) {
    const int e = lane + 32 * i;
    const bool ok = ALL_ROWS || (e * WPC) / NW < rows;
    cp_async(kws + e * WB, kb_src + WB * (ok ? e : 0), ok, WB);
#if REC != 1
    cp_async(sws + e * WB, sb_src + WB * (ok ? e : 0), ok, WB);
#endif
  }
#if RS_SMEM
  if (lane < 4) {  // 8 scales a lane; those past the valid rows zero-filled (src-size below 16)
    const int n = ALL_ROWS ? 16 : min(16, max(0, 2 * rows - 16 * lane));
    cp_async16_zfill(sws + W_BYTES + 16 * lane, rs_t + 16 * lane, rs_t, n);
  }
#endif
}

__device__ __forceinline__ float fast_exp2(float x) {  // ex2.approx: 2 ulp, exp2(-inf) = 0, as Triton's exp2
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The position of cur's highest (TOP) or lowest set bit, which it clears.
template <bool TOP>
__device__ __forceinline__ int take_bit(u32& cur) {
  if (TOP) {
    const int pos = 31 - __clz(cur);
    cur ^= 1u << pos;
    return pos;
  }
  const int pos = __ffs(cur) - 1;
  cur &= cur - 1;
  return pos;
}

#if WALK_LIST
// A walk over one token's kept bitmap, TOP: highest channel first; else lowest first. Its nonempty words are a row of
// the warp's list (filled once a tile for both walks), so moving to the next word is one 8-byte read, made when the
// current word runs out: reading it a word ahead instead was 1.01-1.07x slower (BENCHMARKS.md "Session 22"). A walk
// reads only entries holding bits it takes (every token, a row past the split's end too, has DK kept bits).
// The queue below costs 2 NW - 1 instructions a step (its shifts were 38 % of the tile loop at D = 256, λ = 0.5);
// this walk's move costs about 8 whatever NW, so it is the cheaper one only at NW = 8 (static SASS, BENCHMARKS.md
// "Session 21"). 8-warp blocks and 8 q-table columns keep the queue: the list's 2.3 KB a warp would change the
// blocks that fit. next() returns the byte offset of the next kept channel's entry (this lane's copy) in the q table.
template <bool TOP>
struct Walk {
  const uint2* at;  // the list entry of the current word
  u32 cur, base;
  __device__ __forceinline__ void init(const uint2* words_at, int nonempty) {  // words_at[0 .. nonempty - 1]
    at = TOP ? words_at + nonempty - 1 : words_at;
    cur = at->x;
    base = at->y;
  }
  __device__ __forceinline__ u32 next() {
    if (cur == 0) {
      at += TOP ? -1 : 1;
      const uint2 e = *at;
      cur = e.x;
      base = e.y;
    }
    return base + take_bit<TOP>(cur) * QROW;
  }
};

#else
// DEPTH_TOP, DEPTH_BOT (set by the launcher, cuda.walk_depth): the nonempty words each walk can reach. With two
// walks of DK / 2 kept bits each, neither needs its NW-th word when the other walk's bits cannot fit in one word; at
// D = 128 and DK = 64 the queue keeps 3 of 4 words, which saves two SELs a step (BENCHMARKS.md "Session 23").
#ifndef DEPTH_TOP
#define DEPTH_TOP NW
#endif
#ifndef DEPTH_BOT
#define DEPTH_BOT NW
#endif
// A walk over one token's kept bitmap (its words in registers). TOP: highest channel first; else lowest first.
// Empty words are moved to the back of the queue once, so a step advances by at most one word, and the queue keeps
// the DEPTH words the walk can reach; next() returns the byte offset of the next kept channel's entry (this lane's
// copy) in the q table.
template <bool TOP, int DEPTH = TOP ? DEPTH_TOP : DEPTH_BOT>
struct Walk {
  static_assert(DEPTH >= 1 && DEPTH <= NW, "a walk reaches 1 to NW words");
  u32 qw[NW], qb[NW], cur, base;
  __device__ __forceinline__ void init(const u32 (&words)[NW], bool compact, u32 qoff) {
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const int idx = TOP ? NW - 1 - w : w;
      qw[w] = words[idx];
      qb[w] = (u32)(idx * 32 * QROW) + qoff;  // qoff: this lane's copy, folded in once instead of per entry
    }
    if (compact) {  // warp-uniform: some lane of the warp has an empty word
#pragma unroll
    for (int p = 0; p < NW - 1; ++p) {
#pragma unroll
      for (int j = 0; j < NW - 1 - p; ++j) {
        const bool z = qw[j] == 0;
        const u32 a = qw[j], c = qw[j + 1], x = qb[j], y = qb[j + 1];
        qw[j] = z ? c : a;
        qw[j + 1] = z ? a : c;
        qb[j] = z ? y : x;
        qb[j + 1] = z ? x : y;
      }
    }
    }
    cur = qw[0];
    base = qb[0];
  }
  __device__ __forceinline__ u32 next() {
    const bool e = cur == 0;
    cur = e ? qw[1 < DEPTH ? 1 : 0] : cur;
    base = e ? qb[1 < DEPTH ? 1 : 0] : base;
#pragma unroll
    for (int j = 1; j < DEPTH - 1; ++j) {
      qw[j] = e ? qw[j + 1] : qw[j];
      qb[j] = e ? qb[j + 1] : qb[j];
    }
    return base + take_bit<TOP>(cur) * QROW;
  }
};

#endif

__device__ __forceinline__ float pick(const uint4& vv, int k) {  // kept entry k of its 8-entry chunk
  const int w = (k >> 1) & 3;
  const u32 word = w == 0 ? vv.x : w == 1 ? vv.y : w == 2 ? vv.z : vv.w;
  return (k & 1) ? hi_to_f32(word) : lo_to_f32(word);
}

__device__ __forceinline__ float pick4(const uint2& vv, int k) {  // kept entry k of its 4-entry unit
  const u32 word = ((k >> 1) & 1) ? vv.y : vv.x;
  return (k & 1) ? hi_to_f32(word) : lo_to_f32(word);
}

__device__ __forceinline__ void fma_row(float (&a)[GQ], float x, const unsigned char* qq) {
#if GQ == 2
  const float2 q2 = *(const float2*)qq;
  a[0] += x * q2.x;
  a[1] += x * q2.y;
#else
  const float4 q4 = *(const float4*)qq;
  a[0] += x * q4.x;
  a[1] += x * q4.y;
  a[2] += x * q4.z;
  a[3] += x * q4.w;
#if GQ == 8
  const float4 q5 = *(const float4*)(qq + 16);
  a[4] += x * q5.x;
  a[5] += x * q5.y;
  a[6] += x * q5.z;
  a[7] += x * q5.w;
#endif
#endif
}

// The NW kept-bitmap words of one token, as 16- or 8-byte loads (one load per lane and word would hit NW-way bank
// conflicts: lanes are NW words apart).
__device__ __forceinline__ void load_words(u32 (&w)[NW], const u32* p) {
#if NW % 4 == 0
#pragma unroll
  for (int i = 0; i < NW / 4; ++i) {
    const uint4 x = ((const uint4*)p)[i];
    w[4 * i] = x.x;
    w[(4 * i + 1) % NW] = x.y;
    w[(4 * i + 2) % NW] = x.z;
    w[(4 * i + 3) % NW] = x.w;
  }
#else
  const uint2 x = *(const uint2*)p;
  w[0] = x.x;
  w[1 % NW] = x.y;
#endif
}

// The last block of a KV head to finish merges all NS split partials of that head into the output (the slots past
// this grid's splits hold partials written by an earlier kernel on the stream, e.g. the dense tail's), so that no
// combine kernel is launched. Which block is last: a per-head counter, incremented once per block after its partial
// is visible device-wide (threadfence), and reset to zero by the last block for the next launch. ``scratch``: this
// block's shared memory past the q table (16 + NS * G floats, checked by the launcher).
__device__ __noinline__ void combine_if_last(const float* o_part, const float* lse_part, u16* out, int* counters,
                                             int bh, int NS, float* scratch, int tid, int warp, int lane) {
  __threadfence();
  __syncthreads();  // every thread's partial is written and fenced; the merge's shared buffers are free
  int* last = (int*)scratch;
  if (tid == 0) last[0] = atomicAdd(counters + bh, 1) == (int)gridDim.x - 1;
  __syncthreads();
  if (!last[0]) return;
  __threadfence();
  if (tid == 0) counters[bh] = 0;
  float* w = scratch + 16;  // [NS][G]: log-sum-exps, then normalised weights
  const u64 base = (u64)bh * NS * G;
  for (int e = tid; e < NS * G; e += WARPS * 32) w[e] = __ldcg(lse_part + base + e);  // L2: written by other blocks
  __syncthreads();
  for (int h = warp; h < G; h += WARPS) {
    float m = NEG_INF;
    for (int s = lane; s < NS; s += 32) m = fmaxf(m, w[s * G + h]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(ALL_LANES, m, o));
    float l = 0.f;
    for (int s = lane; s < NS; s += 32) {
      const float x = m == NEG_INF ? 0.f : exp2f(w[s * G + h] - m);
      w[s * G + h] = x;
      l += x;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(ALL_LANES, l, o);
    const float inv = l > 0.f ? 1.f / l : 0.f;  // no token at all: 0 (the launcher refuses that case)
    for (int s = lane; s < NS; s += 32) w[s * G + h] *= inv;
  }
  __syncthreads();
  constexpr int D4 = D / 4;
  for (int e = tid; e < G * D4; e += WARPS * 32) {
    const int h = e / D4, d4 = e % D4;
    const float4* src = (const float4*)(o_part + (base + h) * D) + d4;  // slot s at src + s * G * D4
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < NS; ++s) {
      const float x = w[s * G + h];
      const float4 o = __ldcg(src + (u64)s * G * D4);
      acc.x += x * o.x;
      acc.y += x * o.y;
      acc.z += x * o.z;
      acc.w += x * o.w;
    }
    *(uint2*)(out + ((u64)bh * G + h) * D + 4 * d4) = make_uint2(pack_p(acc.x, acc.y), pack_p(acc.z, acc.w));
  }
}

// __maxnreg__ and __launch_bounds__ exclude each other; a cap between the 255 and 168 that 2 and 3 blocks of 4 warps
// give schedules the λ <= 0.5 walk best (cuda.DEFAULTS says how it was measured).
#if defined(MAXNREG) && MAXNREG
#define KERNEL_BOUNDS __maxnreg__(MAXNREG)
#else
#define KERNEL_BOUNDS __launch_bounds__(WARPS * 32, MINB)
#endif
extern "C" __global__ void KERNEL_BOUNDS spark_walk_split(
    const u16* __restrict__ q,       // [B, H*G, D]
    const u16* __restrict__ kv,      // kept_values [B*H, S, DK]
    const u32* __restrict__ kb,      // kept_bits [B*H, S, NW]
    const u32* __restrict__ sb,      // sign_bits [B*H, S, NW]
    const u16* __restrict__ rs,      // scale [B*H, S]
    const float* __restrict__ u,     // [B*H, D]
    const u16* __restrict__ v,       // values [B*H, S, D], contiguous
    const int* __restrict__ lens,    // [B]
    float* __restrict__ o_part,      // [B*H, NS, G, D]
    float* __restrict__ lse_part,    // [B*H, NS, G]
    u16* __restrict__ out,           // [B, H*G, D] in the query dtype (written when COMBINE)
    int* __restrict__ counters,      // [B*H] zero before the launch, zero again after it (when COMBINE)
    double scale_d, double const_d, int S, int CHUNK, int NS, int H, int COMBINE,
    int R) {                         // query rows per prefix row: row b (of B*R) reads prefix row b / R
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, i4 = lane & 3;
  float* ks = (float*)(smem + QTAB_BYTES + warp * KS_BYTES);  // [GQ][32] kept scores, [32] r
#if WALK_LIST
  uint2* list_row = (uint2*)(smem + QTAB_BYTES + WARPS * KS_BYTES + warp * WL_BYTES) + lane * WL_STRIDE;
#endif
  unsigned char* stages = smem + SMEM_FIXED;
  // Per warp: one V tile (its load is issued after the P·V of the previous tile and lands during the next walk)
  // and STAGES stages of the small arrays (kept values, kept and sign words): with two, the next tile's are issued
  // before this tile's walk; with one (less shared memory, more resident blocks), after this tile's recovery.
  unsigned char* vbuf = stages + warp * WARP_BYTES;
  unsigned char* small0 = vbuf + V_BYTES;

  const int i_s = blockIdx.x, bh = blockIdx.y, b = bh / H;
  // The prefix row this block reads. QROWS (a step of several new tokens): each query row is a row of its own, R of
  // them a prefix row; a build of its own, since the division changes the schedule of the one-token build.
#if QROWS
  const int bd = b / R, bhd = bh - (b - bd) * H;
#else
  const int bd = b, bhd = bh;
#endif
  const float scale = (float)scale_d;
  const u64 row0 = (u64)bhd * (u64)S;

  const int start = i_s * CHUNK;
  const int end = min(start + CHUNK, lens[bd]);
  const u16* kv_bh = kv + row0 * DK;
  const u32* kb_bh = kb + row0 * NW;
  const u32* sb_bh = sb + row0 * NW;
  const u16* v_bh = v + row0 * D;
#if RECORDS
  const unsigned char* rec_bh = (const unsigned char*)v + (u64)bhd * (u64)((S + 31) / 32) * REC_BYTES;
#define TILE(t) (rec_bh + (u64)((t) >> 5) * REC_BYTES)
#define RS_AT(t) (((const u16*)(TILE(t) + RRS_OFF))[lane])
#else
#define RS_AT(t) (rs[row0 + (t) + lane])
#endif

  // Online-softmax state of this warp: head g (rows g+8 unused), accumulator out^T[d][h] in MMA C layout.
  float m_run = NEG_INF, l_run = 0.f;
  float acc[KS][4];
#pragma unroll
  for (int mt = 0; mt < KS; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;

  // Words of a token with no valid row: the first DK channels (safe addresses; the score is masked anyway).
  u32 safe_w[NW];
#pragma unroll
  for (int w = 0; w < NW; ++w) {
    const int n = DK - 32 * w;
    safe_w[w] = n >= 32 ? ALL_LANES : (n <= 0 ? 0u : ((1u << n) - 1));
  }

  auto issue_v = [&](int t0) {
    const int rows = min(32, end - t0);
#if RECORDS
    const unsigned char* src = TILE(t0);
#else
    const unsigned char* src = (const unsigned char*)(v_bh + (u64)t0 * D);
#endif
    if (rows == 32) {
      load_v<true>(smem_u32(vbuf), src, 0, lane);
    } else {
      load_v<false>(smem_u32(vbuf), src, rows * (D / 8), lane);
    }
  };
  auto issue_small = [&](int t0, unsigned char* st) {
    const int rows = min(32, end - t0);
#if RECORDS
    const u16* kv_t = (const u16*)(TILE(t0) + RKV_OFF);
    const u32* kb_t = (const u32*)(TILE(t0) + RKB_OFF);
    const u32* sb_t = (const u32*)(TILE(t0) + RSB_OFF);
#if RS_SMEM
    const unsigned char* rs_t = TILE(t0) + RRS_OFF;
#else
    const unsigned char* rs_t = nullptr;
#endif
#else
    const u16* kv_t = kv_bh + (u64)t0 * DK;
    const u32* kb_t = kb_bh + (u64)t0 * NW;
    const u32* sb_t = sb_bh + (u64)t0 * NW;
    const unsigned char* rs_t = nullptr;
#endif
    if (rows == 32) {
      load_small<true>(smem_u32(st), kv_t, kb_t, sb_t, rs_t, rows, lane);
    } else {
      load_small<false>(smem_u32(st), kv_t, kb_t, sb_t, rs_t, rows, lane);
    }
  };

  // The first tile's small arrays go out before the q table is built, so that their latency overlaps that work;
  // its V tile only after it (below): every block issues its first tiles at once, and with all those V tiles in
  // flight the set-up took 5-8 µs, even with q and u loaded first; this order is 1-10 % faster per step
  // (BENCHMARKS.md "Session 12").
  int t0 = start + 32 * warp;
  unsigned char* st = small0;
  if (t0 < end) issue_small(t0, st);
  cp_commit();
#if !RS_SMEM
  float r_next = 0.f;
#if REC == 0
  if (t0 + lane < end) r_next = elt_to_f32(RS_AT(t0));
#endif
#endif


  // q table: GQ heads per channel row, QCOPIES fp32 copies (copy = lane % QCOPIES at gather time, so the lanes of
  // a load phase never share a bank); the copy order is rotated by channel so that the stores do not conflict either.
  // Every q element (and u, for the recovery operand below) is loaded from global memory once per block, all loads in
  // one batch, coalesced; gathering the operand with 2*KS*4 scalar loads per thread instead cost ~1 µs a step at 8K-32K
  // (BENCHMARKS.md "Session 13").
  const u16* qb = q + (u64)bh * G * D;  // the G query heads of KV head h are contiguous: (b*H + h)*G
  float* qtab = (float*)smem;
#if REC == 0
  float* u_s = (float*)(stages + (WARPS - 1) * WARP_BYTES);  // the last warp's V tile, free until its first issue_v
  constexpr int NU = (D + WARPS * 32 - 1) / (WARPS * 32);
  float ux[NU];
#pragma unroll
  for (int i = 0; i < NU; ++i) {
    const int c = tid + WARPS * 32 * i;
    ux[i] = c < D ? u[(u64)bhd * D + c] : 0.f;
  }
#endif
  {
    constexpr int NQ = (GQ * D + WARPS * 32 - 1) / (WARPS * 32);
    u16 qx[NQ];
#pragma unroll
    for (int i = 0; i < NQ; ++i) {  // element e = head * D + channel: consecutive threads, consecutive addresses
      const int e = tid + WARPS * 32 * i, hq = e / D, c = e % D;
      qx[i] = (e < GQ * D && hq < G) ? qb[e] : (u16)0;
    }
#pragma unroll
    for (int i = 0; i < NQ; ++i) {
      const int e = tid + WARPS * 32 * i, hq = e / D, c = e % D;
      if (e < GQ * D) {
        const float x = elt_to_f32(qx[i]);
#pragma unroll
        for (int k = 0; k < QCOPIES; ++k) qtab[(c * QCOPIES + ((k + c) & (QCOPIES - 1))) * GQ + hq] = x;
      }
    }
  }
#if REC == 0
#pragma unroll
  for (int i = 0; i < NU; ++i) {
    const int c = tid + WARPS * 32 * i;
    if (c < D) u_s[c] = ux[i];
  }
#endif
#if KEPT_MMA == 1
  // Table entry n (a nibble of kept bits, channel c + i at bit i): x, the byte selector of the channels c, c + 1 from
  // (window word 0, zero); y and z, the selector of c + 2, c + 3 from (window words 0, 1) and the mask of the kept ones.
  uint4* lut = (uint4*)(smem + QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES));
  if (tid < 16) {
    const u32 b0 = tid & 1, b1 = (tid >> 1) & 1, b2 = (tid >> 2) & 1, b3 = (tid >> 3) & 1;
    const u32 lo = b0 ? 0x10u : 0x54u, hi = b1 ? (b0 ? 0x32u : 0x10u) : 0x54u;
    const u32 o2 = b0 + b1, o3 = o2 + b2;
    lut[tid] = make_uint4(lo | (hi << 8), (2 * o2) | ((2 * o2 + 1) << 4) | ((2 * o3) << 8) | ((2 * o3 + 1) << 12),
                          (b2 ? 0xFFFFu : 0u) | (b3 ? 0xFFFF0000u : 0u), 0u);
  }
#endif
  __syncthreads();
  // A operand of the recovery MMA: row g = query head g, 4 channels per lane per k-step. K-step s of lane i4 takes
  // bit o = f % 8 of kept-bitmap word f / 8 (f = i4*KS + s) and the bits 16, 8 and 24 above it, so that a bit-select
  // and one rotation put a pair's bits at 14-15 and 30-31 (b0: o, o+16; b1: o+8, o+24). The B values are +-2, so A
  // is halved (exact).
#if QA_SMEM
  uint4* qa_s = (uint4*)(smem + QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES) + LUT_BYTES);
  if (warp == 0)
#else
  u32 qa[KS][2];
#endif
#pragma unroll
  for (int s = 0; s < KS; ++s) {
    const int f = i4 * KS + s, c0 = 32 * (f >> 3) + (f & 7);
    const int ch[4] = {c0, c0 + 16, c0 + 8, c0 + 24};
    float f4[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      // Head g of channel c sits at copy (0 + c) & (QCOPIES - 1) of its row.
      float x = g < G ? qtab[(ch[e] * QCOPIES + (ch[e] & (QCOPIES - 1))) * GQ + g] * 0.5f : 0.f;
#if REC == 0
      x *= u_s[ch[e]];
#endif
      f4[e] = x;
    }
#if QA_SMEM
    qa_s[s * 32 + lane] = make_uint4(pack_bf16(f4[0], f4[1]), 0u, pack_bf16(f4[2], f4[3]), 0u);
#else
    qa[s][0] = pack_bf16(f4[0], f4[1]);
    qa[s][1] = pack_bf16(f4[2], f4[3]);
#endif
  }
#if QA_SMEM
  __syncthreads();
#endif
// One recovery MMA, k-step s, with the A operand where QA_SMEM keeps it.
#if QA_SMEM
#define RECOVERY_MMA(acc, s, b0, b1)                       \
  do {                                                     \
    const uint4 a_ = qa_s[(s) * 32 + lane];                \
    mma_bf16(acc, a_.x, a_.y, a_.z, a_.w, b0, b1);         \
  } while (0)
#else
#define RECOVERY_MMA(acc, s, b0, b1) mma_bf16(acc, qa[s][0], 0u, qa[s][1], 0u, b0, b1)
#endif
#if KEPT_MMA
  // A operand of the kept MMA: q itself in its dtype (exact). K-step s of lane i4 takes channels (D / 4) i4 + 4 s +
  // 0..3 (the four channels of nibble s of its quarter of the bitmap): a0 = c, c + 1, a2 = c + 2, c + 3. Mode 1 keeps
  // it in registers; mode 2 in shared memory, stored as the MMA's four registers {a0, 0, a2, 0}, which one 16-byte
  // load fills in place (from 8-byte pairs the compiler moved them into place: ~100 more instructions a tile at
  // DK = 64), written by warp 0 for the block.
#if KEPT_MMA == 1
  u32 qk[KS][2];
#else
  uint4* qk_s = (uint4*)(smem + QTAB_BYTES + WARPS * (KS_BYTES + WL_BYTES));
  if (warp == 0)
#endif
  {
#pragma unroll
    for (int s = 0; s < KS; ++s) {
      float f4[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ch = (D / 4) * i4 + 4 * s + e;
        f4[e] = g < G ? qtab[(ch * QCOPIES + (ch & (QCOPIES - 1))) * GQ + g] : 0.f;
      }
#if KEPT_MMA == 1
      qk[s][0] = pack_p(f4[0], f4[1]);
      qk[s][1] = pack_p(f4[2], f4[3]);
#else
      qk_s[s * 32 + lane] = make_uint4(pack_p(f4[0], f4[1]), 0u, pack_p(f4[2], f4[3]), 0u);
#endif
    }
  }
#if KEPT_MMA == 2
  __syncthreads();
#endif
#endif
#if REC == 0
  __syncthreads();  // u_s (the last warp's V tile) is read by every warp before that warp's first V copies land there
#endif
  if (t0 < end) issue_v(t0);
  cp_commit();

  for (; t0 < end; t0 += 32 * WARPS) {
    const int t1 = t0 + 32 * WARPS;
#if STAGES == 2
    unsigned char* st_next = (st == small0) ? small0 + SMALL_BYTES : small0;
    if (t1 < end) issue_small(t1, st_next);
    cp_commit();
    cp_wait2();  // this tile's small arrays (its V and the next small arrays may still be in flight)
#else
    unsigned char* st_next = st;
    cp_wait1();  // this tile's small arrays (its V may still be in flight)
#endif
    __syncwarp();
    const int rows = min(32, end - t0);
#if RS_SMEM
    const float r_cur = elt_to_f32(((const u16*)(st + KV_BYTES + 2 * W_BYTES))[lane]);
#else
    float r_cur = r_next;
#if REC == 0
    r_next = (t1 + lane < end) ? elt_to_f32(RS_AT(t1)) : 0.f;
#endif
#endif
    const u32* kws = (const u32*)(st + KV_BYTES);
    const u32* sws = kws + 32 * NW;

#if SPREAD
    // REC_SPREAD: k-step r of the tile's 4 KS (group r / KS, k-step r % KS), called from the walk's loop; the same
    // MMAs in the same order as below.
    float rec[4][2], rc[4], rc2[4];
    u32 rkw[LW], ryr[LW];
    auto recovery_step = [&](int r) {
      const int jj = r / KS, s = r % KS;
      if (s == 0) {
#pragma unroll
        for (int e = 0; e < 4; ++e) rc[e] = rc2[e] = 0.f;
      }
      if (D < 128 ? s == 0 : s % 8 == 0) recovery_word(kws, sws, 8 * jj + g, i4, s / 8, rkw[s / 8], ryr[s / 8]);
      u32 b0, b1;
      recovery_operand(rkw, ryr, s, b0, b1);
      RECOVERY_MMA((s & 1) ? rc2 : rc, s, b0, b1);
      if (s == KS - 1) {
        rec[jj][0] = rc[0] + rc2[0];
        rec[jj][1] = rc[1] + rc2[1];
      }
    };
#endif
#if !KEPT_MMA  // else the kept term is taken with the recovery, on the tensor cores (below)
    // ---- kept term, lane = token: CHAINS independent walks (the top one from the highest channel down, the
    // bottom one from the lowest up), each over half of the DK kept entries, for instruction-level parallelism ----
    {
      const bool valid = lane < rows;
      u32 words[NW];
      if (valid) {
        load_words(words, kws + lane * NW);
      } else {
#pragma unroll
        for (int w = 0; w < NW; ++w) words[w] = safe_w[w];
      }
      const u32 qoff = (lane & (QCOPIES - 1)) * (GQ * 4);
#if KV_MODE == 2
      const unsigned char* kvrow = st + lane * KV_STRIDE16 * 16;
      // Swizzled, chunk c of this row sits at (c & ~7) + ((c & 7) ^ kv_swizzle(lane)), the swizzle being below 8 and
      // below KVC: rows start on multiples of min(16 * KVC, 128) bytes of shared memory (stages start on 128-byte
      // lines), so the offset of chunk c & 7 is the row's with the swizzle's bits set, XOR 16 (c & 7) (an offset from
      // smem, so that the loads stay shared-memory loads; whole 128-byte groups are added after the XOR, since at
      // KVC = 16 a row may start mid-256 bytes, e.g. in a 1-warp block).
      const u32 kvrow_x = (u32)(kvrow - smem) + 16 * kv_swizzle<KVC>(lane);
#define KV_CHUNK(c) (KV_SWIZZLE ? smem + ((kvrow_x ^ (16 * ((c) & 7))) + 16 * ((c) & ~7)) : kvrow + 16 * (c))
#elif KV_MODE == 1
      const unsigned char* kvrow = st + lane * KV_STRIDE_W * 4;
#elif KV_MODE == 3
      const unsigned char* kvrow = st + lane * KVU * 8;
#else
      // The tile's bytes start at the 16-byte boundary below kv_bh + t0*DK; t0 is a multiple of 8 (splits are
      // multiples of 32 tokens, checked by the launcher), so that offset is kv_bh's own.
      const unsigned char* kvrow = st + (RECORDS ? 0 : ((u64)kv_bh & 15)) + lane * DK * 2;
#endif
      float a[GQ];
#pragma unroll
      for (int h = 0; h < GQ; ++h) a[h] = 0.f;
#if WALK_LIST
      int nonempty = 0;
#pragma unroll
      for (int w = 0; w < NW; ++w) {  // an empty word is overwritten by the next one
        list_row[nonempty] = make_uint2(words[w], (u32)(w * 32 * QROW) + qoff);
        nonempty += words[w] != 0;
      }
#define WALK_INIT list_row, nonempty
#else
      bool empty = false;
#pragma unroll
      for (int w = 0; w < NW; ++w) empty |= words[w] == 0;
      const bool compact = __any_sync(ALL_LANES, empty);
#define WALK_INIT words, compact, qoff
#endif
      Walk<true> top;
      top.init(WALK_INIT);
#if CHAINS == 2
      Walk<false> bot;
      bot.init(WALK_INIT);
      float a2[GQ];
#pragma unroll
      for (int h = 0; h < GQ; ++h) a2[h] = 0.f;
      constexpr int STEPS_BOT = DK / 2;
#else
      constexpr int STEPS_BOT = 0;
#endif
#undef WALK_INIT
      constexpr int STEPS = DK - STEPS_BOT;  // the top walk takes the odd one out
#if KV_MODE == 2
      uint4 vv, vv2;
#elif KV_MODE == 1
      u32 vw = 0, vw2 = 0;
#elif KV_MODE == 3
      uint2 vu = make_uint2(0u, 0u), vu2 = make_uint2(0u, 0u);
#endif
#pragma unroll
      for (int j = 0; j < STEPS; ++j) {
#if SPREAD
#pragma unroll
        for (int r = j * 4 * KS / STEPS; r < (j + 1) * 4 * KS / STEPS; ++r) recovery_step(r);
#endif
        const int k = DK - 1 - j;
        const u32 off = top.next();
#if KV_MODE == 2
        if ((k & 7) == 7 || j == 0) vv = *(const uint4*)KV_CHUNK(k >> 3);
        const float x = pick(vv, k);
#elif KV_MODE == 1
        if ((k & 1) == 1 || j == 0) vw = *(const u32*)(kvrow + (k >> 1) * 4);
        const float x = (k & 1) ? hi_to_f32(vw) : lo_to_f32(vw);
#elif KV_MODE == 3
        if ((k & 3) == 3 || j == 0) vu = *(const uint2*)(kvrow + (k >> 2) * 8);
        const float x = pick4(vu, k);
#else
        const float x = elt_to_f32(*(const u16*)(kvrow + 2 * k));
#endif
        fma_row(a, x, smem + off);
#if CHAINS == 2
        if (j < STEPS_BOT) {
          const int k2 = j;
          const u32 off2 = bot.next();
#if KV_MODE == 2
          if ((k2 & 7) == 0) vv2 = *(const uint4*)KV_CHUNK(k2 >> 3);
          const float x2 = pick(vv2, k2);
#elif KV_MODE == 1
          if ((k2 & 1) == 0) vw2 = *(const u32*)(kvrow + (k2 >> 1) * 4);
          const float x2 = (k2 & 1) ? hi_to_f32(vw2) : lo_to_f32(vw2);
#elif KV_MODE == 3
          if ((k2 & 3) == 0) vu2 = *(const uint2*)(kvrow + (k2 >> 2) * 8);
          const float x2 = pick4(vu2, k2);
#else
          const float x2 = elt_to_f32(*(const u16*)(kvrow + 2 * k2));
#endif
          fma_row(a2, x2, smem + off2);
        }
#endif
      }
#if CHAINS == 2
#pragma unroll
      for (int h = 0; h < GQ; ++h) a[h] += a2[h];
#endif
#pragma unroll
      for (int h = 0; h < GQ; ++h) ks[h * 32 + lane] = a[h];
#undef KV_CHUNK
    }
#endif  // !KEPT_MMA
#if REC == 0
    ks[GQ * 32 + lane] = r_cur;
#endif
    __syncwarp();

    // ---- recovery (tensor cores) and scores in the MMA C layout: head g, tokens 8j + 2*i4 + {0, 1} ----
    float sc[4][2];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tt = 8 * j + g;  // token of this lane's B columns
      float c[4] = {0.f, 0.f, 0.f, 0.f}, c2[4] = {0.f, 0.f, 0.f, 0.f};  // two MMA chains, summed below
#if SPREAD
      c[0] = rec[j][0];  // taken during the walk
      c[1] = rec[j][1];
#elif REC != 1
      u32 kw[LW], yr[LW];
#pragma unroll
      for (int m = 0; m < LW; ++m) recovery_word(kws, sws, tt, i4, m, kw[m], yr[m]);
#pragma unroll
      for (int s = 0; s < KS; ++s) {
        u32 b0, b1;
        recovery_operand(kw, yr, s, b0, b1);
        RECOVERY_MMA((s & 1) ? c2 : c, s, b0, b1);
      }
      c[0] += c2[0];
      c[1] += c2[1];
#endif
      const int t_a = 8 * j + 2 * i4;
      float k0 = 0.f, k1 = 0.f;
#if KEPT_MMA
      {
        // Kept term of token tt, this lane's quarter of its channels (D / 4 bits of its bitmap: half a word at D = 64,
        // word i4 at 128, words 2 i4 and 2 i4 + 1 at 256), by nibbles; rank: the quarter's first kept value's index in
        // the token's row (the kept bits of the quarters before it, summed over the token's four lanes).
        constexpr int SEGW = D >= 128 ? D / 128 : 1;  // bitmap words of a quarter
        u32 seg[SEGW];
#pragma unroll
        for (int m = 0; m < SEGW; ++m) {
          seg[m] = D >= 128 ? kws[tt * NW + SEGW * i4 + m] : (kws[tt * NW + (i4 >> 1)] >> (16 * (i4 & 1))) & 0xFFFFu;
        }
        const u32 pc0 = __popc(seg[0]);
        u32 pc = pc0;
#pragma unroll
        for (int m = 1; m < SEGW; ++m) pc += __popc(seg[m]);
        u32 incl = pc, x = __shfl_up_sync(ALL_LANES, incl, 1, 4);
        incl += i4 >= 1 ? x : 0u;
        x = __shfl_up_sync(ALL_LANES, incl, 2, 4);
        incl += i4 >= 2 ? x : 0u;
#if KV_MODE == 2
        constexpr int ROW_BYTES = KV_STRIDE16 * 16;
        constexpr int ROW0 = 0;
#else  // rows of DK values one after another (KV_MODE 1 and 3 rows are unpadded; odd DK: the tile's bytes as they are)
        constexpr int ROW_BYTES = DK * 2;
        const int ROW0 = KV_MODE == 0 && !RECORDS ? (int)((u64)kv_bh & 15) : 0;
#endif
        const u32 row = smem_u32(st) + ROW0 + tt * ROW_BYTES + 2 * (incl - pc);  // the quarter's first value
        float ck[4] = {0.f, 0.f, 0.f, 0.f}, ck2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int s = 0; s < KS; ++s) {
          // Byte address of the nibble's first value (independent of the other nibbles: no chain through them).
          const int m = s / 8, o = 4 * (s % 8);
          const u32 word = seg[m];
          u32 before = o == 0 ? 0u : __popc(word & ((1u << o) - 1u));
          if (m == 1) before += pc0;
          const u32 at = row + 2 * before;
          const u32 nib = (word >> o) & 15u;
#if KEPT_MMA == 1
          const uint4 e = lut[nib];
#else
          // The selectors and mask by arithmetic instead of the table (no shared-memory load, which the A operand's
          // loads need more): tables of 4 16-bit selectors in two registers, indexed by the nibble's low two bits,
          // and the mask from the sign bits of bytes 0 and 1 (bits 2 and 3 of the nibble moved to bits 7 and 15).
          const u32 pick = (nib & 3u) * 0x22u + 0x10u;  // bytes 2i, 2i + 1 of a table
          u32 sel0, sel1, m1;
          asm("prmt.b32 %0, %1, %2, %3;" : "=r"(sel0) : "r"(0x54105454u), "r"(0x32101054u), "r"(pick));
          asm("prmt.b32 %0, %1, %2, %3;" : "=r"(sel1) : "r"(0x32321010u), "r"(0x54543232u), "r"(pick));
          sel1 += (nib & 4u) * 0x880u;  // o3 = o2 + b2: 2 b2 more in the selectors of c + 3's bytes
          asm("prmt.b32 %0, %1, 0, 0x9988;" : "=r"(m1) : "r"(nib * 0x1020u));
          const uint4 e = make_uint4(sel0, sel1, m1, 0u);
#endif
          // The four values from there: three aligned words and a funnel shift by 16 bits where the first value is
          // the high half of its word (sh mod 32).
          const u32* w = (const u32*)(smem + ((at & ~3u) - smem_u32(smem)));
          const u32 sh = at << 3, w1 = w[1];
          const u32 x0 = __funnelshift_r(w[0], w1, sh), x1 = __funnelshift_r(w1, w[2], sh);
          u32 b0, b1;
          asm("prmt.b32 %0, %1, 0, %2;" : "=r"(b0) : "r"(x0), "r"(e.x));
          asm("prmt.b32 %0, %1, %2, %3;" : "=r"(b1) : "r"(x0), "r"(x1), "r"(e.y));
#if KEPT_MMA == 1
          mma_pv((s & 1) ? ck2 : ck, qk[s][0], 0u, qk[s][1], 0u, b0, b1 & e.z);
#else
          const uint4 a = qk_s[s * 32 + lane];
          mma_pv((s & 1) ? ck2 : ck, a.x, a.y, a.z, a.w, b0, b1 & e.z);
#endif
        }
        k0 = ck[0] + ck2[0];
        k1 = ck[1] + ck2[1];
      }
#else
      if (g < GQ) {
        const float2 kk = *(const float2*)(ks + (g < GQ ? g : 0) * 32 + t_a);
        k0 = kk.x;
        k1 = kk.y;
      }
#endif
#if REC == 0
      const float2 rr = *(const float2*)(ks + GQ * 32 + t_a);
      float s0 = (k0 + rr.x * c[0]) * scale, s1 = (k1 + rr.y * c[1]) * scale;
#elif REC == 2
      const float cs = (float)const_d;
      float s0 = (k0 + cs * c[0]) * scale, s1 = (k1 + cs * c[1]) * scale;
#else
      float s0 = k0 * scale, s1 = k1 * scale;
#endif
      if (g < G) {
        s0 = t_a < rows ? s0 : NEG_INF;
        s1 = t_a + 1 < rows ? s1 : NEG_INF;
      } else {
        s0 = 0.f;
        s1 = 0.f;
      }
      sc[j][0] = s0;
      sc[j][1] = s1;
    }

#if STAGES == 1
    // The walk and the recovery have read this stage: the next tile's small arrays land during softmax and P·V.
    __syncwarp();
    if (t1 < end) issue_small(t1, st);
    cp_commit();
#endif

    // ---- online softmax (per head g; the 4 lanes of a head reduce with two shuffles) ----
    float mt = sc[0][0];
#pragma unroll
    for (int j = 0; j < 4; ++j) mt = fmaxf(mt, fmaxf(sc[j][0], sc[j][1]));
    mt = fmaxf(mt, __shfl_xor_sync(ALL_LANES, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(ALL_LANES, mt, 2));
    const float m_new = fmaxf(m_run, mt);
    const float alpha = fast_exp2(m_run - m_new);
    float psum = 0.f;
    u32 pb[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float p0 = fast_exp2(sc[j][0] - m_new), p1 = fast_exp2(sc[j][1] - m_new);
      psum += p0 + p1;
      pb[j] = pack_p(p0, p1);
    }
    l_run = l_run * alpha + psum;
    m_run = m_new;
    const float a0 = __shfl_sync(ALL_LANES, alpha, 8 * i4), a1 = __shfl_sync(ALL_LANES, alpha, 8 * i4 + 4);
    if (!__all_sync(ALL_LANES, a0 == 1.f && a1 == 1.f)) {
#pragma unroll
      for (int m = 0; m < KS; ++m) {
        acc[m][0] *= a0;
        acc[m][1] *= a1;
        acc[m][2] *= a0;
        acc[m][3] *= a1;
      }
    }

    // ---- P·V: out^T[d][h] += V^T[d][t] P[t][h] ----
    cp_wait1();  // this tile's V
    __syncwarp();
    {
      const int qm = lane >> 3, r8 = lane & 7;
      // This lane's row (r % 8 == r8) and its swizzle: logical chunk 2m + (qm & 1) sits at (2m + (qm & 1)) ^ r8,
      // i.e. at byte 32m ^ x16 of the row.
      const u32 vs = smem_u32(vbuf) + ((qm >> 1) * 8 + r8) * V_STRIDE;
      const u32 x16 = ((qm & 1) ^ r8) * 16;
#pragma unroll
      for (int kt = 0; kt < 2; ++kt) {
#pragma unroll
        for (int m = 0; m < KS; ++m) {
          u32 x0, x1, x2, x3;
          ldmatrix_x4_trans(vs + 16 * kt * V_STRIDE + ((32 * m) ^ x16), x0, x1, x2, x3);
          mma_pv(acc[m], x0, x1, x2, x3, pb[2 * kt], pb[2 * kt + 1]);
        }
      }
    }
    __syncwarp();
    if (t1 < end) issue_v(t1);
    cp_commit();
    st = st_next;
  }

  // ---- merge the warps of this block, write the normalised partial and its log-sum-exp ----
  l_run += __shfl_xor_sync(ALL_LANES, l_run, 1);
  l_run += __shfl_xor_sync(ALL_LANES, l_run, 2);
  asm volatile("cp.async.wait_all;\n" ::);
  __syncthreads();
  float* mw = (float*)stages;            // [WARPS][8]
  float* lw = mw + WARPS * 8;            // [WARPS][8]
  float* aw = lw + WARPS * 8;            // [WARPS][G][D]
  if (i4 == 0) {
    mw[warp * 8 + g] = m_run;
    lw[warp * 8 + g] = l_run;
  }
#pragma unroll
  for (int m = 0; m < KS; ++m) {
    const int h0 = 2 * i4, h1 = 2 * i4 + 1, d0 = 16 * m + g, d1 = d0 + 8;
    if (h0 < G) {
      aw[(warp * G + h0) * D + d0] = acc[m][0];
      aw[(warp * G + h0) * D + d1] = acc[m][2];
    }
    if (h1 < G) {
      aw[(warp * G + h1) * D + d0] = acc[m][1];
      aw[(warp * G + h1) * D + d1] = acc[m][3];
    }
  }
  __syncthreads();
  const u64 part = (u64)bh * NS + i_s;
  for (int e = tid; e < G * D; e += WARPS * 32) {
    const int h = e / D, d = e % D;
    float mx = NEG_INF;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) mx = fmaxf(mx, mw[w * 8 + h]);
    float L = 0.f, O = 0.f;
    if (mx != NEG_INF) {
#pragma unroll
      for (int w = 0; w < WARPS; ++w) {
        const float f = exp2f(mw[w * 8 + h] - mx);
        L += f * lw[w * 8 + h];
        O += f * aw[(w * G + h) * D + d];
      }
    }
    o_part[(part * G + h) * D + d] = L > 0.f ? O / L : 0.f;
    if (d == 0) lse_part[part * G + h] = L > 0.f ? mx + log2f(L) : NEG_INF;
  }
  if (COMBINE) combine_if_last(o_part, lse_part, out, counters, bh, NS, (float*)stages, tid, warp, lane);
}
