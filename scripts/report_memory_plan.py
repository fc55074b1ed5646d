"""Memory plan of the real models' graphs: node counts per IR pass and the arena against the naive sum.

For each GGUF model, build the prefill graph (512 tokens by default) and the decode graph, run the IR
passes (no-op views, CSE, DCE) and the arena planner, print the pass table and the arena figures, and
write them all to data/memory_plan.json. Checks the issue's requirement: for Qwen2.5-0.5B prefill at
512 tokens the arena is at most a tenth of the naive sum of intermediates (exit status 1 otherwise).

    .venv/bin/python scripts/report_memory_plan.py [--n-tokens 512] [--max-ctx 2048] [models...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFFile
from rocmforge.ir.alloc import plan
from rocmforge.ir.passes import optimize
from rocmforge.models import GraphSpec, build_graph

MODELS_DIR = Path("/root/.cache/rocmforge/models")
DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-0.5b")
REQUIREMENT = ("qwen2.5-0.5b", 0.1)  # model whose 512-token prefill arena is at most this x naive
MIB = 1 << 20


def report_graph(cfg: ModelConfig, weights: dict, spec: GraphSpec) -> dict:
    g = build_graph(cfg, weights, spec)
    t0 = time.perf_counter()
    opt, passes = optimize(g)
    t1 = time.perf_counter()
    p = plan(opt)
    t2 = time.perf_counter()
    p.check()
    kv = sum(t.n_elements for t in opt.leaves("state")) * (2 if spec.kv_dtype == "f16" else 4)
    largest = max(p.offsets, key=lambda i: p.nbytes[i])
    return {
        "graph": g.name, "n_tokens": spec.n_tokens, "max_ctx": spec.max_ctx,
        # no timings in the file: it is checked in and should change only when the plan does
        "passes": [{k: v for k, v in row.items() if k != "ms"} for row in passes.rows()],
        "nodes_before": passes.nodes_before, "nodes_after": passes.nodes_after,
        "buffers": len(p.offsets), "inplace": len(p.inplace),
        "arena_bytes": p.arena_bytes, "naive_bytes": p.naive_bytes, "peak_live_bytes": p.peak_live_bytes,
        "arena_over_naive": p.arena_bytes / p.naive_bytes,
        "largest_buffer": {"name": opt.nodes[largest].name, "bytes": p.nbytes[largest]},
        "kv_cache_bytes": kv, "_report": passes,
        "_times": f"optimize {(t1 - t0) * 1e3:.0f} ms, plan {(t2 - t1) * 1e3:.0f} ms",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=list(DEFAULT_MODELS),
                    help=f"GGUF paths or names under {MODELS_DIR}")
    ap.add_argument("--n-tokens", type=int, default=512, help="prefill graph size")
    ap.add_argument("--max-ctx", type=int, default=2048, help="KV cache rows (outside the arena)")
    ap.add_argument("--out", default="data/memory_plan.json")
    args = ap.parse_args(argv)

    results, ok = [], True
    for m in args.models:
        path = Path(m) if Path(m).suffix == ".gguf" else MODELS_DIR / f"{m}.gguf"
        f = GGUFFile.open(path)
        cfg = ModelConfig.from_gguf(f)
        weights = {n: (t.shape, t.ggml_type.name.lower()) for n, t in f.tensors.items()}
        entry = {"model": path.stem, "arch": cfg.arch, "n_layer": cfg.n_layer, "graphs": []}
        print(f"== {path.stem} ({cfg.arch}, {cfg.n_layer} layers, n_embd {cfg.n_embd}, n_ff {cfg.n_ff})")
        for n_tokens in (args.n_tokens, 1):
            r = report_graph(cfg, weights, GraphSpec(n_tokens, args.max_ctx))
            print(r.pop("_report").table())
            print(f"  {r.pop('_times')}")
            big = r["largest_buffer"]
            print(f"  arena {r['arena_bytes'] / MIB:9.2f} MiB   naive sum {r['naive_bytes'] / MIB:9.2f} MiB"
                  f"   ratio {r['arena_over_naive']:.4f} ({1 / r['arena_over_naive']:.1f}x smaller)"
                  f"   peak live {r['peak_live_bytes'] / MIB:.2f} MiB")
            print(f"  {r['buffers']} buffers, {r['inplace']} in place, largest {big['name']} "
                  f"{big['bytes'] / MIB:.2f} MiB; KV cache {r['kv_cache_bytes'] / MIB:.1f} MiB "
                  f"(outside the arena)\n")
            want_model, limit = REQUIREMENT
            if path.stem == want_model and n_tokens == 512:
                r["requirement"] = {"max_arena_over_naive": limit, "met": r["arena_over_naive"] <= limit}
                ok &= r["requirement"]["met"]
                met = r["requirement"]["met"]
                print(f"  requirement arena <= naive / 10: {'met' if met else 'NOT MET'}\n")
            entry["graphs"].append(r)
        results.append(entry)
        f.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"alignment": 256, "models": results}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
