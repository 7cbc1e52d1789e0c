"""Session 26: a CPU emulation of the kept MMA's B operand (spark_walk.cu KEPT_MMA, and its D = 64 / 256 form in
kept_mma_all_dk_s26.patch), for random bitmaps, kept values and row offsets: for every lane quarter and nibble, the
window (three aligned words from the nibble's rank, a funnel shift) and the two byte permutes must give the dense
channels 4s .. 4s + 3 of the quarter, which is the channel order of the A operand (q) that the kernel builds
(channel (D / 4) i4 + 4 s + e). It also checks the computed selectors of kept_mma_alu_sel_s26.patch against the table.
It emulates `prmt` and the funnel shift; it is not the kernel (that is checked on the GPU against the reference).
Command: python benchmarks/results/experiments/kept_mma_emulate_s26.py   (2-core CPU machine, 2026-11-30: 0 mismatches
over 300 random tokens for each of D = 64, 128 and 256, and the 16 nibbles' computed selectors equal to the table)."""
import random
import struct


def prmt(a: int, b: int, c: int) -> int:
    """PTX prmt.b32 (default mode): byte i of the result from selector nibble i of c over the 8 bytes of (a, b)."""
    src = [(a >> (8 * i)) & 255 for i in range(4)] + [(b >> (8 * i)) & 255 for i in range(4)]
    out = 0
    for i in range(4):
        sel = (c >> (4 * i)) & 15
        byte = src[sel & 7]
        if sel & 8:  # sign-replicate mode
            byte = 255 if byte & 128 else 0
        out |= byte << (8 * i)
    return out


def popc(x: int) -> int:
    return bin(x & 0xFFFFFFFF).count("1")


def table_entry(n: int) -> tuple[int, int, int]:
    """The kernel's 16-entry table: selector of channels c, c + 1 from (window word 0, zero), selector of c + 2, c + 3
    from (window words 0, 1), mask of the kept ones among c + 2, c + 3."""
    b0, b1, b2, b3 = n & 1, (n >> 1) & 1, (n >> 2) & 1, (n >> 3) & 1
    lo = 0x10 if b0 else 0x54
    hi = (0x32 if b0 else 0x10) if b1 else 0x54
    o2 = b0 + b1
    o3 = o2 + b2
    return (lo | (hi << 8), (2 * o2) | ((2 * o2 + 1) << 4) | ((2 * o3) << 8) | ((2 * o3 + 1) << 12),
            (0xFFFF if b2 else 0) | (0xFFFF0000 if b3 else 0))


def computed_entry(n: int) -> tuple[int, int, int]:
    """kept_mma_alu_sel_s26.patch: the same from two table PRMTs and a sign-replicating PRMT."""
    pick = (n & 3) * 0x22 + 0x10
    sel0 = prmt(0x54105454, 0x32101054, pick) & 0xFFFF
    sel1 = (prmt(0x32321010, 0x54543232, pick) + (n & 4) * 0x880) & 0xFFFF
    return sel0, sel1, prmt((n * 0x1020) & 0xFFFFFFFF, 0, 0x9988)


def mismatches(head_dim: int, trials: int, rng: random.Random) -> int:
    words_a_token, ksteps = head_dim // 32, head_dim // 16
    bad = 0
    for _ in range(trials):
        kept = sorted(rng.sample(range(head_dim), rng.randint(0, head_dim)))
        values = [rng.randint(1, 0xFFFF) for _ in kept]
        words = [0] * words_a_token
        for c in kept:
            words[c // 32] |= 1 << (c % 32)
        dense = [0] * head_dim
        for k, c in enumerate(kept):
            dense[c] = values[k]
        row0 = rng.choice([0, 2, 6, 10])  # a row may start off a word (odd DK in separate arrays)
        mem = bytearray(rng.getrandbits(8) for _ in range(row0 + 2 * len(kept) + 64))  # garbage past the row
        for k, v in enumerate(values):
            mem[row0 + 2 * k:row0 + 2 * k + 2] = struct.pack("<H", v)

        def word_at(addr: int) -> int:
            return struct.unpack("<I", mem[addr:addr + 4])[0]

        segw = head_dim // 128 if head_dim >= 128 else 1
        quarters = [[words[segw * i4 + m] for m in range(segw)] if head_dim >= 128
                    else [(words[i4 >> 1] >> (16 * (i4 & 1))) & 0xFFFF] for i4 in range(4)]
        counts = [sum(popc(w) for w in q) for q in quarters]
        for i4, quarter in enumerate(quarters):
            row = row0 + 2 * sum(counts[:i4])
            for s in range(ksteps):
                m, o = s // 8, 4 * (s % 8)
                before = (popc(quarter[m] & ((1 << o) - 1)) if o else 0) + (popc(quarter[0]) if m == 1 else 0)
                at = row + 2 * before
                sel0, sel1, mask = table_entry((quarter[m] >> o) & 15)
                base, shift = at & ~3, (at << 3) & 31
                w0, w1, w2 = word_at(base), word_at(base + 4), word_at(base + 8)
                x0 = ((w1 << 32 | w0) >> shift) & 0xFFFFFFFF
                x1 = ((w2 << 32 | w1) >> shift) & 0xFFFFFFFF
                b0, b1 = prmt(x0, 0, sel0), prmt(x0, x1, sel1) & mask
                c = (head_dim // 4) * i4 + 4 * s
                bad += (b0, b1) != (dense[c] | dense[c + 1] << 16, dense[c + 2] | dense[c + 3] << 16)
    return bad


if __name__ == "__main__":
    rng = random.Random(1)
    for d in (64, 128, 256):
        print(f"D = {d}: {mismatches(d, 300, rng)} mismatches over 300 random tokens")
    same = all(table_entry(n) == computed_entry(n) for n in range(16))
    print("computed selectors equal the table for all 16 nibbles:", same)
