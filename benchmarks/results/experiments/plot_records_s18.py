"""Session 18: the decode table's speed-up over the best SDPA backend with and without tile records (one H200,
2026-11-29 23:46-23:47 UTC; decode_attention_h200_s18_records{0,1,2}.json). Run from this folder:
``python plot_records_s18.py`` -> decode_records_s18.png."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {0: "main (separate arrays)", 1: "records with V (one region a tile)", 2: "records without V"}
rows = {r: json.load(open(f"decode_attention_h200_s18_records{r}.json"))["rows"] for r in LABELS}
cells = [(c, b, lam) for c in (32768, 131072) for b in (1, 8) for lam in (0.5, 0.8)]
fig, ax = plt.subplots(figsize=(9, 4))
width = 0.27
for i, r in enumerate(LABELS):
    ys = [next(x["speedup_vs_sdpa"] for x in rows[r] if (x["context"], x["batch"], x["key_ratio"]) == cell)
          for cell in cells]
    ax.bar([k + (i - 1) * width for k in range(len(cells))], ys, width, label=LABELS[r])
for target, lam in ((1.2, 0.5), (1.4, 0.8)):
    ax.axhline(target, ls="--", lw=0.8, color="grey")
    ax.text(len(cells) - 0.5, target, f"target at λ = {lam}", va="bottom", ha="right", fontsize=8)
ax.set_xticks(range(len(cells)), [f"{c // 1024}K·b{b}\nλ={lam}" for c, b, lam in cells])
ax.set_ylim(0.9, 1.55)
ax.set_ylabel("speed-up over the best SDPA backend")
ax.set_title("Decode step, Llama heads (32 q / 8 KV, D = 128, bf16), one H200, same call per layout")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
fig.savefig("decode_records_s18.png", dpi=120)
