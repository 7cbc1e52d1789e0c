#!/bin/bash
# Assemble the Qwen2.5-Coder-1.5B GGUF from the parts that travelled, check it, convert it once (fp32 safetensors,
# sparkv.models.convert_gguf) and save a bf16 copy the eval shards load quickly.
set -e
export PYTHONPATH=/root/repo:/root/site SPARKV_CACHE=/root/cache
G=/root/qwen2.5-coder-1.5b-instruct.gguf
cat $(ls /root/parts/c* | sort) > $G
echo "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046  $G" | sha256sum -c
cd /root/repo
python - <<'PY'
import torch
from sparkv.models import convert_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer
src = convert_gguf("/root/qwen2.5-coder-1.5b-instruct.gguf")
m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
m.save_pretrained("/root/qwen-bf16")
AutoTokenizer.from_pretrained(src).save_pretrained("/root/qwen-bf16")
print("bf16 copy in /root/qwen-bf16")
PY
