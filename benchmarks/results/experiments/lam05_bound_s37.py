"""Session 37: what the λ = 0.5 target cells would take if their step moved bytes like the λ = 0.8 step.

Fits time = fixed + bytes / rate through a decode table's λ = 0.8 rows at 128K·b1 and 128K·b8 (Llama heads), then
predicts the λ = 0.5 steps at 32K·b8 and 128K·b1 from their bytes, with the layout as it is and with 8 bytes less a
token and KV head (signs stored only for pruned channels), against the same run's best SDPA backend.

    python benchmarks/results/experiments/lam05_bound_s37.py [benchmarks/results/decode_attention_h200_s37.json]
"""
import json
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/decode_attention_h200_s37.json"
rows = {(r["model"], r["context"], r["batch"], r["key_ratio"]): r for r in json.load(open(path))["rows"]}
LLAMA, KV_HEADS, PRUNED_SIGN_SAVING = "llama-3.1-8b", 8, 8
b1, b8 = rows[(LLAMA, 131072, 1, 0.8)], rows[(LLAMA, 131072, 8, 0.8)]
rate = (b8["bytes"] - b1["bytes"]) / (b8["us"] - b1["us"])  # bytes per µs
fixed = b1["us"] - b1["bytes"] / rate
print(f"fit through λ = 0.8 at 128K·b1 / 128K·b8: {fixed:.2f} µs + {rate / 1e6:.3f} TB/s")
print("| cell | λ = 0.8 fit vs run (µs) | λ = 0.5 run | at λ = 0.8's rate | and pruned-only signs |")
print("|---|---|---|---|---|")
for context, batch in [(32768, 8), (131072, 1)]:
    lam05, lam08 = rows[(LLAMA, context, batch, 0.5)], rows[(LLAMA, context, batch, 0.8)]
    sdpa = min(lam05["sdpa_flash_us"], lam05["sdpa_cudnn_us"])
    at_rate = fixed + lam05["bytes"] / rate
    fewer = fixed + (lam05["bytes"] - context * batch * KV_HEADS * PRUNED_SIGN_SAVING) / rate
    print(f"| {context // 1024}K·b{batch} | {fixed + lam08['bytes'] / rate:.1f} vs {lam08['us']:.1f} | "
          f"{lam05['us']:.1f} µs, {sdpa / lam05['us']:.3f}x | {at_rate:.1f} µs, {sdpa / at_rate:.3f}x | "
          f"{fewer:.1f} µs, {sdpa / fewer:.3f}x |")
