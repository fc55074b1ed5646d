"""`rocmforge` command line: `models list|fetch`, `info`, `generate`, `bench`, `perplexity`, `synth`,
`report`.

Each subcommand is a `cmd_<name>(args) -> int` function registered in `build_parser()`; to add one
(e.g. `generate`), write the function and an `add_parser` block there. Expected failures (bad file,
unknown model, no network) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import gguf as gguf_pkg
import numpy as np

from rocmforge import __version__, hub
from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFError, GGUFFile, StringArray, open_model

__all__ = ["main", "build_parser", "model_info"]

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`rocmforge: error: ...`, exit 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"rocmforge: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _checked(kind: type, ok: Any, what: str) -> Any:
    """An argparse type: kind(text), refused unless ok(value), with `what` saying what is wanted."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return v

    return parse


POSITIVE = _checked(int, lambda v: v > 0, "a positive integer")
COUNT = _checked(int, lambda v: v >= 0, "a non-negative integer")
TEMPERATURE = _checked(float, lambda v: v >= 0 and v == v and v != float("inf"), "a temperature >= 0")
PROBABILITY = _checked(float, lambda v: 0 < v <= 1, "a probability in (0, 1]")


def tunables(text: str) -> dict[str, int]:
    """An argparse type: NAME=INT,... of the HIP backend's tunables (HipBackend(tunables=...)): the kernels'
    compile defines and host-side parameters (kernel_choice: RF_MMV*, RF_MMQ_*; launch_attention:
    RF_DEC_WARPS, RF_DEC_SPAN; launch_mul_mat: RF_FOLD_NORMS); another name is refused rather than ignored."""
    from rocmforge.backends.hip.kernel_choice import _DEFINE_PREFIXES, HOST_TUNABLES
    from rocmforge.backends.hip.launch_attention import DEC_TUNABLES
    from rocmforge.backends.hip.launch_mul_mat import FOLD_TUNABLES

    out = {}
    for item in filter(None, text.split(",")):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq:
            raise argparse.ArgumentTypeError(f"{item!r}: write NAME=INT")
        if not (name.startswith(_DEFINE_PREFIXES) or name in (*HOST_TUNABLES, *DEC_TUNABLES, *FOLD_TUNABLES)):
            raise argparse.ArgumentTypeError(
                f"{name}: not a tunable (the mat-vec ones start {', '.join(_DEFINE_PREFIXES)}; the decode "
                f"attention's are {', '.join(DEC_TUNABLES)}; {', '.join(FOLD_TUNABLES)}: the MiB of weight "
                f"a norm folds into)")
        try:
            out[name] = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not an integer") from None
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


# -- models ---------------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    rows = []
    for e in hub.list_models():
        default = " (default)" if e.name == hub.DEFAULT_MODEL else ""
        state = "cached" if hub.is_cached(e.name) else "not cached"
        rows.append((e.name + default, e.arch, e.quant, _size(e.size), state, e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    print(f"cache: {hub.cache_dir() / 'models'}")
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    path = hub.fetch(args.name, force=args.force, progress=not args.quiet)
    print(path)
    return 0


# -- info -----------------------------------------------------------------------------------------


def _scalar(v: Any) -> Any:
    # metadata scalars are JSON-ready; anything else (an array where a scalar belongs) shown as text
    return v if v is None or isinstance(v, int | float | str | bool) else repr(v)


def model_info(f: GGUFFile) -> dict[str, Any]:
    """Everything `rocmforge info` shows, as JSON-ready data."""
    cfg = ModelConfig.from_gguf(f)
    by_type: dict[str, dict[str, int]] = {}
    for t in f.tensors.values():
        d = by_type.setdefault(t.ggml_type.name, {"count": 0, "bytes": 0})
        d["count"] += 1
        d["bytes"] += t.n_bytes
    try:
        file_type = gguf_pkg.LlamaFileType(cfg.file_type).name if cfg.file_type is not None else None
    except ValueError:
        file_type = str(cfg.file_type)
    tokens = f.get("tokenizer.ggml.tokens")
    merges = f.get("tokenizer.ggml.merges")
    seq = (list, np.ndarray, StringArray)
    return {
        "path": str(f.path),
        "file_size": f.file_size,
        "gguf_version": f.version,
        "architecture": cfg.arch,
        "name": cfg.name,
        "file_type": file_type,
        "config": dataclasses.asdict(cfg),
        "tensors": {
            "count": len(f.tensors),
            "bytes": f.tensor_bytes,
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"])),
        },
        "tokenizer": {
            "model": f.get("tokenizer.ggml.model"),
            "pre": f.get("tokenizer.ggml.pre"),
            "vocab_size": len(tokens) if isinstance(tokens, seq) else None,
            "merges": len(merges) if isinstance(merges, seq) else None,
            "bos_token_id": _scalar(f.get("tokenizer.ggml.bos_token_id")),
            "eos_token_id": _scalar(f.get("tokenizer.ggml.eos_token_id")),
            "add_bos_token": _scalar(f.get("tokenizer.ggml.add_bos_token")),
            "has_chat_template": isinstance(f.get("tokenizer.chat_template"), str),
        },
    }


def _print_info(info: dict[str, Any]) -> None:
    cfg, ten, tok = info["config"], info["tensors"], info["tokenizer"]
    print(f"file          {info['path']} ({_size(info['file_size'])}, GGUF v{info['gguf_version']})")
    print(f"architecture  {info['architecture']}")
    print(f"name          {info['name']}")
    print(f"file type     {info['file_type']}")
    print("hyper-parameters")
    for k, v in cfg.items():
        if k not in ("arch", "name"):
            print(f"  {k:<13} {v}")
    print(f"tensors       {ten['count']}, {ten['bytes']} bytes ({_size(ten['bytes'])})")
    for name, d in ten["by_type"].items():
        print(f"  {name:<8} {d['count']:>5} tensors  {d['bytes']:>12} bytes  ({_size(d['bytes'])})")
    print("tokenizer")
    for k, v in tok.items():
        print(f"  {k:<17} {v}")


def cmd_info(args: argparse.Namespace) -> int:
    with open_model(args.model) as f:
        info = model_info(f)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


# -- perplexity -----------------------------------------------------------------------------------


def cmd_perplexity(args: argparse.Namespace) -> int:
    from rocmforge import llamacpp
    from rocmforge.engine import Engine
    from rocmforge.perplexity import perplexity

    tool = None
    if args.llama_cpp or args.llama_dir is not None:  # found before the run: a missing tool fails first
        tool = llamacpp.find_tool("llama-perplexity", args.llama_dir)
    try:  # read before the model loads: a bad file fails first
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{args.file} is not UTF-8 text") from None
    eng = Engine.from_gguf(args.model, backend=_backend(args), max_ctx=args.ctx_size)

    def progress(i: int, n: int, ppl: float) -> None:
        print(f"[{i}]{ppl:.4f},", end="\n" if i == n else "", flush=True)

    res = perplexity(eng, text, n_ctx=args.ctx_size, n_chunks=args.chunks, progress=progress)
    print(f"Final estimate: {res}")
    if tool is not None:  # the same text, chunks and model file through llama-perplexity
        theirs = llamacpp.run_perplexity(eng.model.path, args.file, args.ctx_size, args.chunks,
                                         llama_dir=args.llama_dir)
        print(f"llama.cpp: {','.join(f'[{i}]{v:.4f}' for i, v in enumerate(theirs.running, 1))},")
        print(f"llama.cpp: Final estimate: {theirs}")
        print(f"rocmforge / llama.cpp PPL: {res.ppl / theirs.ppl:.5f}")
        print(f"llama.cpp command: {theirs.command_line}")
    return 0


# -- synth ----------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from gguf import GGMLQuantizationType as Q

    from rocmforge import synth

    qtype = None if args.qtype.lower() == "keep" else args.qtype.upper()
    if qtype is not None and qtype not in Q.__members__:
        raise ValueError(f"unknown type {args.qtype!r}: a GGML type name (Q4_0, Q8_0, F16, ...) or 'keep'")
    if os.path.exists(args.out) and not args.force:
        raise ValueError(f"{args.out} exists; --force to overwrite")
    part = f"{args.out}.part"  # renamed when whole: an interrupted run leaves no OUT
    try:
        if args.source in synth.PRESETS:
            if qtype is None:
                raise ValueError(f"preset {args.source!r} needs a type (Q4_0, Q8_0, ...), not 'keep'")
            synth.write_random_model(part, args.source, Q[qtype], seed=args.seed)
        else:
            with open_model(args.source) as f:  # a known model name (fetched) or a path, checked first
                src = f.path
            synth.write_like(src, part, None if qtype is None else Q[qtype], seed=args.seed)
        os.replace(part, args.out)
    finally:
        if os.path.exists(part):
            os.remove(part)
    print(f"{args.out} ({_size(os.path.getsize(args.out))})")
    return 0


# -- generate -------------------------------------------------------------------------------------

def _backend(args: argparse.Namespace) -> Any:
    """--backend, or a HIP backend with the settings asked for: --int8-activations (x quantized for Q4_0/Q8_0
    mat-vecs), bench's --prefill (the prefill MUL_MAT path)."""
    prefill = getattr(args, "prefill", None)
    tuned = getattr(args, "tunables", None)
    int8 = INT8_SETTING[args.int8_activations]
    if int8 == "auto" and prefill is None and not tuned:
        return args.backend
    if args.backend == "numpy":
        flag = "--int8-activations" if int8 != "auto" else "--prefill" if prefill else "--tunables"
        raise ValueError(f"{flag} is a HIP-backend setting; it does not apply to --backend numpy")
    from rocmforge.backends.hip import HipBackend

    # without a usable GPU (or with --prefill blas, a vendor BLAS): RuntimeError saying what is missing
    return HipBackend(int8_activations=int8, prefill=prefill or "auto", tunables=tuned)


def cmd_generate(args: argparse.Namespace) -> int:
    from rocmforge.engine import ContextOverflowError, Engine
    from rocmforge.profile import IDLE, top_ops

    eng = Engine.from_gguf(args.model, backend=_backend(args), max_ctx=args.max_ctx)
    prompt = args.prompt
    if args.chat:
        prompt = eng.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    interrupted, gen = False, None
    try:
        print(args.prompt if not args.chat else "", end="", flush=True)
        gen = eng.generate(prompt, max_new_tokens=args.max_tokens, temperature=args.temp, top_k=args.top_k,
                           top_p=args.top_p, seed=args.seed)
        for chunk in gen:
            print(chunk.text, end="", flush=True)
    except ContextOverflowError:
        print()  # end the streamed line before the one-line error
        raise
    except KeyboardInterrupt:  # the statistics so far, then exit 130
        interrupted = True
        if gen is not None:
            gen.close()
    print()
    st = eng.last_stats
    drawn = "" if st.sampling in ("", "greedy") else f"; sampled on the {st.sampling}, seed {st.seed}"
    print(f"\n[{eng.backend.device_name}] prefill: {st.prompt_tokens} tokens, {st.prefill_tps:.1f} t/s | "
          f"decode: {st.new_tokens} tokens, {st.decode_tps:.1f} t/s ({st.stop_reason}){drawn}",
          file=sys.stderr)
    if st.timings:
        tm = st.timings
        wall = "" if tm.wall_us is None else f", step {tm.wall_us / 1e3:.2f} ms"
        print(f"costliest ops of one decode step ({tm.mode} timing{wall}; {IDLE}: what the ops' sum "
              f"does not explain):", file=sys.stderr)
        for op, row in top_ops(tm, 6).iterrows():
            ms, n, share = row["sum"] / 1e3, int(row["count"]), 100 * row["share"]
            print(f"  {op:16s} {ms:9.3f} ms  x{n:<6d} {share:5.1f}%", file=sys.stderr)
    return 130 if interrupted else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rocmforge import bench
    from rocmforge.engine import Engine

    if not args.p and not args.n:
        raise ValueError("-p 0 and -n 0: nothing to run")
    part = None
    if args.o:  # opened before the run, renamed when the records are whole
        part = open(f"{args.o}.part", "w")
    try:
        max_ctx = max(args.d + args.p + 1, args.d + args.n + 1, 16)
        eng = Engine.from_gguf(args.model, backend=_backend(args), max_ctx=max_ctx, fuse=not args.no_fuse,
                               kv_dtype=args.kv_type)
        recs = bench.bench(eng, pp=[args.p] if args.p else [], tg=[args.n] if args.n else [], reps=args.r,
                           depths=[args.d], progress=bench.stderr_progress)
        if part is not None:
            for r in recs:
                part.write(json.dumps(r) + "\n")
            part.close()
            os.replace(part.name, args.o)
    finally:
        if part is not None and not part.closed:
            part.close()
            os.remove(part.name)
    print("| model | size | params | backend | device | test | t/s | GB/s | step: device / host us |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        test += f" @ d{r['n_depth']}" if r["n_depth"] else ""
        gbs = f"{r['avg_gbs']:.1f}" if "avg_gbs" in r else ""
        gbs += f" ({r['pct_copy']:.0f}% of copy)" if "pct_copy" in r else ""
        size = f"{r['model_size'] / 2**20:.1f} MiB | {r['model_n_params'] / 1e6:.1f} M"
        split = f"{r['step_device_us']:.0f} / {r['step_host_us']:.0f}" if "step_device_us" in r else ""
        int8 = r.get("int8_activations", False)  # (absent in records of before the "auto" default: off)
        backend = r["backends"] + ("" if int8 == "auto" else " int8" if int8 else " f32-x")
        backend += "".join(f" {k}={v}" for k, v in r.get("tunables", {}).items())
        print(f"| {r['model_type']} | {size} | {backend} | {r['gpu_info']} | {test} | "
              f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} | {gbs} | {split} |")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rocmforge import report

    if args.from_dir is not None:
        given = [f for f, v in (("--model", args.model), ("--llama-dir", args.llama_dir), ("-p", args.p),
                                ("-n", args.n), ("-r", args.r)) if v is not None]
        if given:
            raise ValueError(f"--from DIR rebuilds the page from DIR/data alone; it takes no "
                             f"{', '.join(given)}")
        print(report.rebuild(args.from_dir))
        return 0
    backend: Any = args.backend
    if args.int8_activations != "auto":
        _backend(args)  # refused here, before any run, where it does not apply
        backend = lambda: _backend(args)  # noqa: E731 (one backend object per model)
    flags = ["--backend", args.backend] + (
        [f"--{'' if args.int8_activations == 'on' else 'no-'}int8-activations"]
        if args.int8_activations != "auto" else [])
    page = report.run_report(args.model or [hub.DEFAULT_MODEL], args.out, backend=backend,
                             backend_flags=flags, n_prompt=512 if args.p is None else args.p,
                             n_gen=128 if args.n is None else args.n, reps=3 if args.r is None else args.r,
                             llama_dir=args.llama_dir, timeout=args.llama_timeout)
    print(page)
    return 0


INT8_HELP = ("HIP backend: activations quantized to int8 for Q4_0/Q8_0 decode mat-vecs of >= 8192 rows (as "
             "llama.cpp's q8_1; slightly less exact); --no-int8-activations: never; neither: where the rows "
             "are long enough for it to pay on this GPU (LLaMA-7B's on an H100)")
# the flags' values -> HipBackend(int8_activations=...)
INT8_SETTING = {"on": True, "off": False, "auto": "auto"}


def _int8_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8-activations", dest="int8_activations", action="store_const", const="on",
                   default="auto", help=INT8_HELP)
    p.add_argument("--no-int8-activations", dest="int8_activations", action="store_const", const="off",
                   help=argparse.SUPPRESS)


PREFILL_HELP = ("HIP backend: MUL_MAT of more than 4 tokens on the vendor BLAS (blas: cuBLAS / hipBLAS GEMMs "
                "on f16 tiles), our int8 matrix-core kernel on GGUF blocks (mmq) or our tiled kernel "
                "(tiled); auto (the default): the kernel table's choice")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rocmforge", description="Run and study GGUF LLMs (numpy / HIP).")
    p.add_argument("--version", action="version", version=f"rocmforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="list or fetch the known models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="known models and whether they are cached")
    ml.set_defaults(func=cmd_models_list)
    mf = msub.add_parser("fetch", help="download a known model into the cache")
    mf.add_argument("name", metavar="NAME", help=f"one of: {', '.join(hub.REGISTRY)}")
    mf.add_argument("--force", action="store_true", help="download again even if cached")
    mf.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    mf.set_defaults(func=cmd_models_fetch)

    info = sub.add_parser("info", help="architecture, hyper-parameters, tensors and tokenizer of a model")
    info.add_argument("model", nargs="?", default=hub.DEFAULT_MODEL, metavar="MODEL",
                      help=f"known model name or GGUF path (default: {hub.DEFAULT_MODEL})")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    gen = sub.add_parser("generate", help="generate text, then print tokens/s and the costliest ops")
    gen.add_argument("prompt", metavar="PROMPT")
    gen.add_argument("--model", default=hub.DEFAULT_MODEL, metavar="NAME|PATH",
                     help=f"known model name or GGUF path (default: {hub.DEFAULT_MODEL})")
    gen.add_argument("--backend", default="auto", choices=("auto", "numpy", "hip"))
    _int8_flag(gen)
    gen.add_argument("--max-tokens", type=POSITIVE, default=64)
    gen.add_argument("--max-ctx", type=POSITIVE, default=2048, help="KV cache size in tokens")
    gen.add_argument("--temp", type=TEMPERATURE, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=COUNT, default=40,
                     help="0 = no top-k cut; 1-256: drawn on the device where the backend can")
    gen.add_argument("--top-p", type=PROBABILITY, default=0.95)
    gen.add_argument("--seed", type=COUNT, default=None,
                     help="below 2^64: the same text on every backend (default: drawn, then printed)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.set_defaults(func=cmd_generate)

    b = sub.add_parser("bench", help="llama-bench-style pp/tg runs (JSONL with llama-bench's fields)")
    b.add_argument("--model", default=hub.DEFAULT_MODEL, metavar="NAME|PATH")
    b.add_argument("--backend", default="auto", choices=("auto", "numpy", "hip"))
    _int8_flag(b)
    b.add_argument("--prefill", choices=("auto", "tiled", "blas", "mmq"), default=None, help=PREFILL_HELP)
    b.add_argument("--tunables", type=tunables, default=None, metavar="NAME=INT,...",
                   help="HIP backend: kernel tunables, e.g. RF_DEC_WARPS=8,RF_DEC_SPAN=64 (the decode "
                        "attention's block and the rows a split takes) or RF_MMV_ROWS=4")
    b.add_argument("-p", type=COUNT, default=512, help="prompt tokens (0: skip pp)")
    b.add_argument("-n", type=COUNT, default=128, help="generated tokens (0: skip tg)")
    b.add_argument("-r", type=POSITIVE, default=3, help="repetitions after one warm-up")
    b.add_argument("-d", type=COUNT, default=0, help="context depth: tokens in the cache before each test "
                   "(llama-bench's -d)")
    b.add_argument("-o", metavar="FILE.jsonl", help="write records in llama-bench's JSONL fields")
    b.add_argument("-ctk", "--kv-type", dest="kv_type", choices=("auto", "f16", "f32"), default="auto",
                   help="KV cache type (auto: f16 on a GPU, f32 on numpy; llama-bench's -ctk/-ctv)")
    b.add_argument("--no-fuse", action="store_true", help="run the graphs as the model builds them (no "
                   "fused ops or stacked weights: the fusion pass's baseline)")
    b.set_defaults(func=cmd_bench)

    pp = sub.add_parser("perplexity", help="teacher-forced perplexity of a text file, chunked as "
                                           "llama-perplexity chunks it")
    pp.add_argument("-f", "--file", required=True, metavar="TEXT", help="UTF-8 text file")
    pp.add_argument("--model", default=hub.DEFAULT_MODEL, metavar="NAME|PATH")
    pp.add_argument("--backend", default="auto", choices=("auto", "numpy", "hip"))
    _int8_flag(pp)
    pp.add_argument("-c", "--ctx-size", type=_checked(int, lambda v: v >= 4 and v % 2 == 0,
                                                      "an even number >= 4"), default=512,
                    help="tokens per chunk (llama-perplexity's -c)")
    pp.add_argument("--chunks", type=POSITIVE, default=None, help="at most this many chunks")
    pp.add_argument("--llama-cpp", action="store_true",
                    help="then run llama-perplexity on the same text and chunks, and print both")
    pp.add_argument("--llama-dir", metavar="DIR", help="where llama-perplexity is (implies --llama-cpp; "
                                                       "default: $ROCMFORGE_LLAMA_DIR, else PATH)")
    pp.set_defaults(func=cmd_perplexity)

    sy = sub.add_parser("synth", help="a random-weight GGUF with a real model's layout (for benchmarks)")
    sy.add_argument("source", metavar="PRESET|MODEL",
                    help="a preset (qwen2-0.5b, llama-7b, smollm2-135m) or a GGUF file / known model to "
                         "copy the layout of (metadata, tensor names, shapes)")
    sy.add_argument("qtype", metavar="QTYPE", help="type of the matrices (Q4_0, Q8_0, ...); 'keep' for a "
                                                   "model's own types")
    sy.add_argument("out", metavar="OUT.gguf")
    sy.add_argument("--seed", type=COUNT, default=0)
    sy.add_argument("--force", action="store_true", help="overwrite OUT")
    sy.set_defaults(func=cmd_synth)

    rp = sub.add_parser("report", help="bench and profile models (and llama.cpp with the same settings, "
                                       "where found) into DIR/data and one HTML page, DIR/report.html")
    where = rp.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="run, then write DIR/data/ and DIR/report.html")
    where.add_argument("--from", dest="from_dir", metavar="DIR",
                       help="rebuild DIR/report.html from DIR/data alone (no model, no GPU)")
    rp.add_argument("--model", action="append", metavar="NAME|PATH",
                    help=f"known model name or GGUF path; repeat for several (default: {hub.DEFAULT_MODEL})")
    rp.add_argument("--backend", default="auto", choices=("auto", "numpy", "hip"))
    _int8_flag(rp)
    rp.add_argument("--llama-dir", metavar="DIR", help="where llama-bench is (default: $ROCMFORGE_LLAMA_DIR, "
                                                       "else PATH; without it only rocmforge runs)")
    rp.add_argument("--llama-timeout", type=_checked(float, lambda v: v > 0, "a positive number of seconds"),
                    default=3600.0, metavar="S", help="seconds one llama-bench run may take (default 3600)")
    rp.add_argument("-p", type=COUNT, default=None, help="prompt tokens (default 512; 0: skip pp)")
    rp.add_argument("-n", type=COUNT, default=None, help="generated tokens (default 128; 0: skip tg)")
    rp.add_argument("-r", type=POSITIVE, default=None, help="repetitions after one warm-up (default 3)")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `rocmforge info --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (GGUFError, hub.HubError, OSError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())  # always one line
        print(f"rocmforge: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("rocmforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
