#!/usr/bin/env bash
# One device call that checks this session's GPU-side work, in priority order (each stage time-boxed):
# graph-timing and device-memory GPU tests; per-op sum vs replayed step (profile_step.py) on the real models'
# layouts and the 7B synth file; bench_matvec beside it; the rest of the GPU suite; greedy tokens of an older
# tree (OLD, e.g. `git archive d69d75b rocmforge kernels scripts pyproject.toml | tar -x -C .devrun/old`)
# against this one. Expects .whl (gguf, cuda-bindings, cuda-pathfinder) and .devrun/<model>.layout.xz
# (scripts/dump_layout.py) carried. Results under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*"; }
python3 - <<'PY'
import glob, lzma, os, pickle
from gguf import GGMLQuantizationType as Q
from rocmforge.synth import write_layout, write_random_model
write_random_model("/tmp/llama-7b-Q4_0.gguf", "llama-7b", Q.Q4_0)
for f in glob.glob(".devrun/*.layout.xz"):
    write_layout(pickle.load(lzma.open(f)), "/tmp/" + os.path.basename(f).replace(".layout.xz", "-like.gguf"))
PY
el synth
timeout 120 python3 -m pytest -q -ra tests/gpu/test_timing_gpu.py tests/gpu/test_device_memory.py 2>&1 | tee $OUT/tests_timing.txt | tail -6; el tests
timeout 200 python3 scripts/profile_step.py /tmp/*-like.gguf /tmp/llama-7b-Q4_0.gguf --steps 5 --json $OUT/profile.json 2>&1 | tee $OUT/profile.txt; el profile
timeout 60 python3 scripts/bench_matvec.py --types Q4_0 --shapes llama --reps 20 2>&1 | tail -6 | tee $OUT/bench.txt; el bench
timeout 300 python3 -m pytest -q -ra tests/gpu --ignore=tests/gpu/test_timing_gpu.py --ignore=tests/gpu/test_device_memory.py 2>&1 | tee $OUT/gpu_suite.txt | tail -12; el suite
OLD=${OLD:-$PWD/.devrun/old}
if [ -d "$OLD" ]; then
  for v in old new; do
    D=$PWD; [ $v = old ] && D=$OLD
    PYTHONPATH=/tmp/site:$D timeout 80 python3 - $OUT/toks_$v.json /tmp/*-like.gguf <<'PY'
import json, sys
from rocmforge.engine import Engine
out = {}
for m in sys.argv[2:]:
    e = Engine.from_gguf(m, max_ctx=256)
    e.prefill([1, 2, 3, 4, 5, 6, 7, 8])
    out[m] = [e.step(timed=False).token for _ in range(24)]
json.dump(out, open(sys.argv[1], "w"))
PY
  done
  python3 -c "import json; a=json.load(open('$OUT/toks_old.json')); b=json.load(open('$OUT/toks_new.json')); print('tokens equal old/new', {k: a[k] == b.get(k) for k in a})"
fi
el done
