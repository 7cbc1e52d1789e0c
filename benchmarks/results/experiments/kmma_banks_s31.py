"""Session 31: shared-memory wavefronts of the kept MMA's window reads (spark_walk.cu, KEPT_MMA 2 and 3), simulated on
the CPU. Every lane (g, i4) of a k-step reads three 32-bit words of its token's kept row from the nibble's rank
(token 8j + g of a 32-token tile); a load instruction costs as many wavefronts as the most distinct words that fall
in one bank. Mode 2: lane i4 takes the quarter i4 of the token's channels (nibble 8 i4 + s at D = 128); mode 3: nibble
4 s + i4, so that a quad's four lanes read neighbouring words. Kept sets come from select_pack_ref on Gaussian keys
with per-channel scales (D = 128, DK = 64, 4096 tokens, seed 0).
Command: python benchmarks/results/experiments/kmma_banks_s31.py
Result (2-core CPU machine, torch 2.13.0, 2026-11-30): wavefronts per load, rows of 32 words (128 B, unpadded) /
36 words (144 B, one 16-byte chunk of padding): mode 2 5.56 / 3.17, mode 3 7.11 / 1.97; mode 3 with rows of 34, 44,
52, 60 words: 2.95, 1.97, 1.97, 1.97. Nsight Compute on the H200 agreed in direction: shared-load bank conflicts
13.9 M (mode 2, unpadded) and 3.1 M (mode 3, 144 B) a launch at 128K·b1 (BENCHMARKS.md "Session 31")."""
import torch

from sparkv.cache.layout import unpack_bits
from sparkv.kernels.select_pack.reference import select_pack_ref

D, DK, S = 128, 64, 4096
torch.manual_seed(0)
keys = torch.randn(1, 1, S, D) * (torch.rand(D) * 3 + 0.2)  # channels of different scales, as real keys have
stat = torch.rand(1, 1, D) + 0.05
kept = unpack_bits(select_pack_ref(keys, stat, DK).kept_bits, D)[0, 0]
rank = torch.cat([torch.zeros(S, 1, dtype=torch.long), kept.long().cumsum(-1)], -1)  # kept channels below c


def wavefronts(mode: int, row_words: int) -> float:
    total = loads = 0
    for t0 in range(0, S, 32):
        for j in range(4):
            for s in range(D // 16):
                for w in range(3):
                    banks: dict[int, set[int]] = {}
                    for lane in range(32):
                        g, i4 = lane >> 2, lane & 3
                        c = 16 * s + 4 * i4 if mode == 3 else (D // 4) * i4 + 4 * s
                        word = (8 * j + g) * row_words + int(rank[t0 + 8 * j + g, c]) // 2 + w
                        banks.setdefault(word % 32, set()).add(word)
                    total += max(len(v) for v in banks.values())
                    loads += 1
    return total / loads


if __name__ == "__main__":
    for mode in (2, 3):
        print(f"mode {mode}: rows of 32 words {wavefronts(mode, 32):.2f}, 36 words {wavefronts(mode, 36):.2f}")
    print("mode 3, rows of 34 / 44 / 52 / 60 words:", ", ".join(f"{wavefronts(3, n):.2f}" for n in (34, 44, 52, 60)))
