#!/usr/bin/env bash
# One device call: real models on the HIP backend vs llama.cpp references, then rocmforge bench and
# llama-bench on the same GPU. Expects /tmp/m/smol.gguf and /tmp/m/qwen.gguf (sent in pieces before).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/llama PYTHONUNBUFFERED=1
mkdir -p /tmp/llama && tar xJf .llamacpp/llbin-cuda-sm90a.tar.xz -C /tmp/llama
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
sha256sum /tmp/m/*.gguf | tee -a $OUT/gpu.txt
python3 scripts/gpu_model_check.py --model smollm2-135m=/tmp/m/smol.gguf --model qwen2.5-0.5b=/tmp/m/qwen.gguf \
    --kv "${KV:-f32}" --out $OUT/gpu_models.json 2>&1 | tee $OUT/gpu_models.log
for m in smol qwen; do
    python3 -m rocmforge.cli bench --model /tmp/m/$m.gguf --backend hip -p 512 -n 128 -r 3 \
        -o $OUT/rf_$m.jsonl 2>&1 | tail -4
    LLB=$(find /tmp/llama -name llama-bench -type f | head -1)
    $LLB -m /tmp/m/$m.gguf -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o jsonl > $OUT/llamabench_$m.jsonl 2> $OUT/llb_$m.err
    python3 -c "import json,sys; [print('llama.cpp', r['model_type'], 'pp' + str(r['n_prompt']) if r['n_prompt'] else 'tg' + str(r['n_gen']), round(r['avg_ts'], 1)) for r in map(json.loads, open('$OUT/llamabench_$m.jsonl'))]"
done
