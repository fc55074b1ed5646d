#!/usr/bin/env bash
# One device call (~8 min on an H100) that checks the GPU side, in priority order, each stage time-boxed:
# the GPU test suite; tg128/pp512 of llama-bench (-fa 1) beside `rocmforge bench` on the same synthetic files
# (the real models' exact layouts, Qwen2-0.5B and LLaMA-7B at Q4_0), for this tree and an older tree OLD
# where given (VARIANTS: "new old" by default, "int8" adds --int8-activations, "f32x" --no-int8-activations
# (the default is int8 x where rows reach 4096 on sm_90), "mmq" --prefill mmq, "nofold"
# --tunables RF_FOLD_NORMS=0 (the norms not folded into the mat-vecs), "tuned:NAME=INT,..." this tree with
# those --tunables, another name runs the tree
# .devrun/<name>: a branch's archive);
# greedy tokens of this tree (fused and --no-fuse) against OLD's; per-op trace timings (profile_step.py);
# bench_matvec against OLD's, bench_matmul (tiled vs cuBLAS prefill), bench_sample. Expects carried: .whl
# (gguf, cuda-bindings, cuda-pathfinder, cupti-python, pyelftools wheels), .llamacpp (llbin-cuda-sm90a.tar.xz), .devrun/<model>.layout.xz (scripts/dump_layout.py)
# and optionally OLD (e.g. `git archive d69d75b rocmforge kernels scripts dev pyproject.toml | tar -x -C
# .devrun/old`). Results under $OUT. A short call: SUITE (pytest arguments), SUITE_S (its time limit), MODELS
# (bench these files of /tmp, without .gguf), VARIANTS=new; STAGES: the stages to run, of
# "suite bench attn toks profile host matvec matmul sample soak deep" (all by default; deep: tg128 at depth
# 4096 and device memory beside llama-bench's); PP: prompt lengths of the bench stage (default 512; "512,2048" adds pp2048); OLD_MODELS: bench OLD on these MODELS only.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=/tmp/llama PYTHONUNBUFFERED=1
mkdir -p /tmp/llama && tar xJf .llamacpp/llbin-cuda-sm90a.tar.xz -C /tmp/llama
command -v ncu > /dev/null || export PATH=$PATH:/usr/local/cuda/bin:$(ls -d /opt/nvidia/nsight-compute/* 2>/dev/null | tail -1)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
OLD=${OLD:-$PWD/.devrun/old}
# the tree a variant runs: new (and int8) this one, old $OLD, any other name .devrun/<name> (e.g. a branch:
# `git archive decode-chain rocmforge kernels scripts dev pyproject.toml | tar -x -C .devrun/chain`)
tree() { case $1 in new|int8|f32x|mmq|nofold|tuned:*) echo $PWD ;; old) echo $OLD ;; *) echo $PWD/.devrun/$1 ;; esac; }
want() { [[ " ${STAGES:-suite bench attn toks profile host matvec matmul sample soak deep} " == *" $1 "* ]]; }
T0=$(date +%s); el() { echo "[t+$(( $(date +%s) - T0 ))s] $*" | tee -a $OUT/log.txt; }
MODELS=${MODELS:-} python3 - <<'PY'
import glob, lzma, os, pickle
from gguf import GGMLQuantizationType as Q
from rocmforge.synth import write_layout, write_random_model
for p, t in (("qwen2-0.5b", "Q4_0"), ("llama-7b", "Q4_0"), ("llama-7b", "Q8_0")):
    # by default the Q4_0 files; llama-7b-Q8_0 (7 GB) only when MODELS names it
    if f"{p}-{t}" in os.environ["MODELS"] or (not os.environ["MODELS"] and t == "Q4_0"):
        write_random_model(f"/tmp/{p}-{t}.gguf", p, getattr(Q, t))
for f in glob.glob(".devrun/*.layout.xz"):
    write_layout(pickle.load(lzma.open(f)), "/tmp/" + os.path.basename(f).replace(".layout.xz", "-like.gguf"))
PY
el synth
if want suite; then
timeout ${SUITE_S:-150} python3 -m pytest -q -ra ${SUITE:-tests/gpu} 2>&1 | tee $OUT/gpu_suite.txt \
  | grep -E "FAILED|ERROR|passed|failed"
el suite
fi
PP=${PP:-512}  # prompt lengths, comma-separated (llama-bench's -p)
# a JSONL of llama-bench or rocmforge bench records as "pp512=... tg128=..."
f() { python3 -c "
import json, sys
try: rs = [json.loads(l) for l in open(sys.argv[1])]
except Exception: rs = []
print(' '.join(('pp%d=' % r['n_prompt'] if r['n_prompt'] else 'tg%d=' % r['n_gen']) + str(round(r['avg_ts'], 1))
               for r in rs) or 'none')" $1; }
if want bench; then
LLB=$(find /tmp/llama -name llama-bench -type f | head -1)
for m in ${MODELS:-$(cd /tmp && ls *-like.gguf qwen2-0.5b-Q4_0.gguf llama-7b-Q4_0.gguf | sed 's/.gguf$//')}; do
  timeout 90 $LLB -m /tmp/$m.gguf -ngl 99 -fa 1 -p ${PP:-512} -n 128 -r 3 -o jsonl > $OUT/llb_$m.jsonl \
    2> /tmp/llb_$m.err || tail -2 /tmp/llb_$m.err
  echo "$m llama.cpp $(f $OUT/llb_$m.jsonl)"
  for vv in ${VARIANTS:-new old}; do
    D=$(tree $vv); X=""; [ $vv = int8 ] && X="--int8-activations"; [ $vv = mmq ] && X="--prefill mmq"
    [ $vv = f32x ] && X="--no-int8-activations"
    [ $vv = nofold ] && X="--tunables RF_FOLD_NORMS=0"
    [[ $vv == tuned:* ]] && X="--tunables ${vv#tuned:}"
    v=${vv//[:=,]/_}  # (in file names)
    [ -d "$D" ] || continue
    [ $v = old ] && [ -n "${OLD_MODELS:-}" ] && [[ " $OLD_MODELS " != *" $m "* ]] && continue
    for p in ${PP//,/ }; do  # one prompt length a run (tg128 with the first)
      [ $p = ${PP%%,*} ] && n=128 || n=0
      rm -f /tmp/rf_${v}_${m}_$p.jsonl /tmp/rf_${v}_${m}_$p.log
      (cd $D && PYTHONPATH=/tmp/site:$D timeout 60 python3 -m rocmforge.cli bench --model /tmp/$m.gguf --backend hip \
        -p $p -n $n -r 3 $X -o /tmp/rf_${v}_${m}_$p.jsonl > /tmp/rf_${v}_${m}_$p.log 2>&1 \
        || tail -2 /tmp/rf_${v}_${m}_$p.log)
      cat /tmp/rf_${v}_${m}_$p.jsonl >> $OUT/rf_${v}_$m.jsonl 2>/dev/null
    done
    echo "$m rocmforge $v $(f $OUT/rf_${v}_$m.jsonl) $(grep -h '^| .* tg' /tmp/rf_${v}_${m}_*.log | awk -F'|' '{print $10}')"
  done
  el $m
done 2>&1 | tee $OUT/bench.txt
fi
if want deep; then  # issue 19: tg128 at depth 4096 beside llama-bench, and device memory at that context
for m in ${MODELS:-qwen2-0.5b-Q4_0 llama-7b-Q4_0}; do
  LLB=$(find /tmp/llama -name llama-bench -type f | head -1)
  timeout 120 $LLB -m /tmp/$m.gguf -ngl 99 -fa 1 -p 0 -n 128 -d 4096 -r 3 -v -o jsonl > $OUT/llb_deep_$m.jsonl \
    2> /tmp/llb_deep_$m.err || tail -2 /tmp/llb_deep_$m.err
  # llama.cpp's device buffers (model, KV at n_ctx = 4096 + 128, compute, output), MiB, from its -v log
  grep -E "CUDA0 .*buffer size" /tmp/llb_deep_$m.err | sort -u | sed "s/^/$m llama.cpp /"
  timeout 120 python3 -m rocmforge.cli bench --model /tmp/$m.gguf --backend hip -p 0 -n 128 -d 4096 -r 3 \
    -o $OUT/rf_deep_$m.jsonl > /tmp/rf_deep_$m.log 2>&1 || tail -2 /tmp/rf_deep_$m.log
  echo "$m deep llama.cpp $(f $OUT/llb_deep_$m.jsonl) rocmforge $(f $OUT/rf_deep_$m.jsonl)"
  timeout 120 python3 -c "
from rocmforge.engine import Engine
e = Engine.from_gguf('/tmp/$m.gguf', backend='hip', max_ctx=4096 + 128)
e.prefill([1] * 64); e.step()
print('$m rocmforge MiB', {k: round(v / 2**20, 1) for k, v in e.memory().items()})
print('$m rocmforge plan MiB', {k: round(v / 2**20, 1) for k, v in e.device_plan().items()})"
done 2>&1 | tee $OUT/deep.txt
el deep
fi
cat > /tmp/toks.py <<'PY'
import inspect, json, sys
from rocmforge.engine import Engine
out = {}
for spec in sys.argv[2:]:
    m, *flags = spec.split(":")
    kw = {"fuse": "nofuse" not in flags} if "fuse" in inspect.signature(Engine.from_gguf).parameters else {}
    if "tiled" in flags:  # the tiled prefill kernel instead of the cuBLAS default (f16 tiles)
        from rocmforge.backends.hip import HipBackend
        kw["backend"] = HipBackend(prefill="tiled")
    e = Engine.from_gguf(m, max_ctx=256, kv_dtype="f16" if "f16" in flags else "f32", **kw)
    e.prefill([1, 2, 3, 4, 5, 6, 7, 8])
    out[spec] = [e.step(timed=False).token for _ in range(32)]
json.dump(out, open(sys.argv[1], "w"))
PY
M=$(ls /tmp/*-like.gguf)
if want toks; then
timeout 120 python3 /tmp/toks.py $OUT/toks_new.json $M $(for m in $M; do echo $m:nofuse $m:f16 $m:tiled; done)
if [ -d "$OLD" ]; then
  PYTHONPATH=/tmp/site:$OLD timeout 60 python3 /tmp/toks.py $OUT/toks_old.json $M
  python3 -c "
import json; a = json.load(open('$OUT/toks_old.json')); b = json.load(open('$OUT/toks_new.json'))
print({m: (b[m] == a[m], b[m + ':nofuse'] == a[m], b[m + ':tiled'] == a[m],
          sum(x == y for x, y in zip(b[m + ':f16'], a[m]))) for m in a},
      '(fused, unfused, tiled prefill) == old, f16 KV tokens equal to old of 32')" | tee -a $OUT/log.txt
fi
el toks
fi
if want profile; then
timeout ${PROFILE_S:-240} python3 scripts/profile_step.py $M /tmp/llama-7b-Q4_0.gguf --steps 5 --prompt 512 --modes trace,graph \
  --llama-ncu --llama-dir /tmp/llama \
  --json $OUT/profile.json 2>&1 | tee $OUT/profile.txt
el profile
fi
if want attn; then  # FLASH_ATTN_EXT alone, this tree and OLD's (scripts/bench_attention.py)
for v in ${VARIANTS:-new old}; do
  D=$(tree $v); [ -d "$D" ] && [ -f $D/scripts/bench_attention.py ] || continue
  (cd $D && PYTHONPATH=/tmp/site:$D timeout 120 python3 scripts/bench_attention.py --ctx 543,4096 \
    --depth 16,64,128,512,2048 --prompt 512,2048 2>&1 | tail -26 | sed "s/^/$v /")
done | tee $OUT/attn.txt
el attn
fi
if want host; then
timeout 90 python3 scripts/profile_host.py $M --steps 200 --top 15 2>&1 | tee $OUT/host.txt
el host
fi
if want matvec; then
for v in old new; do
  D=$PWD; [ $v = old ] && D=$OLD; [ -d "$D" ] || continue
  (cd $D && PYTHONPATH=/tmp/site:$D timeout 40 python3 scripts/bench_matvec.py --types Q4_0,Q8_0 --shapes llama \
    --reps 20 2>&1 | tail -9 | sed "s/^/$v /")
done | tee $OUT/matvec.txt
fi
if want matmul; then
timeout 60 python3 scripts/bench_matmul.py --tokens 64,512 2>&1 | tail -14 | tee $OUT/matmul.txt
fi
if want sample; then
timeout 60 python3 scripts/bench_sample.py --vocab 151936 --model /tmp/qwen2-0.5b-Q4_0.gguf 2>&1 | tail -12 \
  | tee $OUT/sample.txt
el bench_sample
fi
if want soak; then
timeout 90 python3 scripts/soak_decode.py /tmp/smollm2-135m-like.gguf --steps 10000 --every 2500 \
  --json $OUT/soak.json 2>&1 | tail -6 | tee $OUT/soak.txt
el done
fi
# a call returns at most 8 files of $OUT: all of them in one archive too
(cd $OUT && tar czf session.tgz --exclude=session.tgz *)
