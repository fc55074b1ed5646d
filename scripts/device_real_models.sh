#!/usr/bin/env bash
# One device call on the real models (SmolLM2-135M, Qwen2.5-0.5B), which a call cannot carry whole (64 MiB):
# first, on this machine, `split -b 55M -d ~/.cache/rocmforge/models/<m>.gguf .chunks/<m>.gguf.part` (with
# /.chunks/ in .git/info/exclude), then one device call per piece, each carrying only that piece, within
# 30 s of the last (the machine stays warm): `mkdir -p /tmp/models && cat .chunks/<piece> >>
# /tmp/models/<m>.gguf`. Then this script (carrying .whl, .llamacpp): the files' checksums (compare with
# sha256sum here), the logits against llama.cpp's recorded runs through the default f16 KV path (prefill on
# attention_mma.hip) and through f32 (scripts/gpu_model_check.py), greedy tokens of replayed and timed steps,
# and `rocmforge report` with llama-bench for both and the synth Qwen2-0.5B Q4_0. Results under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/llama PYTHONUNBUFFERED=1
mkdir -p /tmp/llama && tar xJf .llamacpp/llbin-cuda-sm90a.tar.xz -C /tmp/llama
# ncu for the report's op-by-op table of llama.cpp's kernels
command -v ncu > /dev/null || export PATH=$PATH:/usr/local/cuda/bin:$(ls -d /opt/nvidia/nsight-compute/* 2>/dev/null | tail -1)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(cd /tmp/models && sha256sum *.gguf)
S=/tmp/models/smollm2-135m.gguf Q=/tmp/models/qwen2.5-0.5b.gguf
check() {  # logits against llama.cpp's recorded runs through the KV cache type $1
  timeout ${CHECK_S:-150} python3 scripts/gpu_model_check.py --model smollm2-135m=$S --model qwen2.5-0.5b=$Q --kv $1 \
    --out $OUT/gpu_models_$1.json 2>&1 | tail -12
}
check f16
python3 - <<'PY'
from rocmforge.engine import Engine
for m in ("/tmp/models/smollm2-135m.gguf", "/tmp/models/qwen2.5-0.5b.gguf"):
    runs = []
    for timed in (False, True):
        e = Engine.from_gguf(m, max_ctx=256)
        e.prefill([1, 2, 3, 4, 5, 6, 7, 8])
        runs.append([e.step(timed=timed).token for _ in range(32)])
    print(m, "replay == eager-timed tokens:", runs[0] == runs[1])
PY
if [ -d "${OLD:-}" ]; then  # greedy tokens of an older tree (e.g. .devrun/old) against this one's
  cat > /tmp/rtoks.py <<'PY'
import json, sys
from rocmforge.engine import Engine
out = {}
for m in sys.argv[2:]:
    for kv in ("f32", "f16"):
        e = Engine.from_gguf(m, max_ctx=256, kv_dtype=kv)
        e.prefill([1, 2, 3, 4, 5, 6, 7, 8])
        out[f"{m}:{kv}"] = [e.step(timed=False).token for _ in range(32)]
json.dump(out, open(sys.argv[1], "w"))
PY
  timeout 90 python3 /tmp/rtoks.py $OUT/rtoks_new.json $S $Q
  (cd $OLD && PYTHONPATH=/tmp/site:$OLD timeout 90 python3 /tmp/rtoks.py $OUT/rtoks_old.json $S $Q)
  python3 -c "
import json; a = json.load(open('$OUT/rtoks_old.json')); b = json.load(open('$OUT/rtoks_new.json'))
print({k: (a[k] == b[k], sum(x == y for x, y in zip(a[k], b[k]))) for k in a}, '(old == new, tokens equal of 32)')"
fi
python3 -c "
from gguf import GGMLQuantizationType as Q
from rocmforge.synth import write_random_model
write_random_model('/tmp/qwen2-0.5b-Q4_0.gguf', 'qwen2-0.5b', Q.Q4_0)"
timeout ${REPORT_S:-300} python3 -m rocmforge.cli report --out $OUT/report --model $S --model $Q --model /tmp/qwen2-0.5b-Q4_0.gguf \
  --backend hip --llama-dir /tmp/llama 2>&1 | tail -25
[ "${F32_CHECK:-1}" = 0 ] || check f32  # last: the f16 path is the default one
# a call returns at most 8 files of $OUT: everything in one archive besides the page
(cd $OUT && tar czf real_models.tgz --exclude=real_models.tgz --exclude=report/report.html *)
