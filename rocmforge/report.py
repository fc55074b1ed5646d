"""`rocmforge report`: one self-contained HTML page comparing rocmforge with llama.cpp on this machine.

run_report() runs `rocmforge bench` (and llama-bench with the same settings, when llama.cpp is found) and
one timed decode step per model, and keeps the raw records in DIR/data/: the bench JSONL of each tool,
the per-op frame of each step as CSV, and environment.json (machine, versions, settings, the exact
commands). The page is rendered from DIR/data/ alone, so `rocmforge report --from DIR` rebuilds the same
page without a model or a GPU. Figures are matplotlib PNGs embedded as base64; nothing else is needed to
read the page.
"""

from __future__ import annotations

import ast
import base64
import gc
import html
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .ir.cost import Cost
from .llamacpp import (
    LlamaCppError,
    LlamaCppNotFound,
    compare_ops,
    find_tool,
    read_bench_jsonl,
    run_bench,
    run_kernel_profile,
)
from .profile import IDLE, TIMING_MODES, OpTiming, StepTimings, summary, timings_frame

if TYPE_CHECKING:
    import pandas as pd

DATA = "data"
PAGE = "report.html"
ENV_FILE = "environment.json"
OURS_JSONL = "rocmforge_bench.jsonl"
LLAMA_JSONL = "llamacpp_bench.jsonl"


def _stderr(msg: str) -> None:
    print(f"report: {msg}", file=sys.stderr, flush=True)


# ---- the machine --------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The commit of the checkout rocmforge runs from (with -dirty for local changes); None when it is
    installed from a wheel or git is missing."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _gpu_info() -> dict[str, Any]:
    """GPU name and driver/runtime versions as CuPy reports them; empty without CuPy."""
    try:
        import cupy
    except Exception:  # not installed, or a broken install
        return {}
    info: dict[str, Any] = {"cupy": cupy.__version__}
    try:
        rt = cupy.cuda.runtime
        hip = bool(rt.is_hip)
        v = int(rt.runtimeGetVersion())
        # HIP: major * 10^7 + minor * 10^5 + patch; CUDA: major * 1000 + minor * 10
        info["hip_runtime" if hip else "cuda_runtime"] = (
            f"{v // 10**7}.{v // 10**5 % 100}.{v % 10**5}" if hip else f"{v // 1000}.{v % 1000 // 10}")
        d = int(rt.driverGetVersion())
        info["driver"] = str(d) if hip else f"{d // 1000}.{d % 1000 // 10}"
        name = rt.getDeviceProperties(0)["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:  # no device or no driver: say so rather than fail the report
        info["gpu_error"] = " ".join(str(e).split())
    return info


def environment() -> dict[str, Any]:
    """What ran the report: CPU, GPU and driver/runtime versions (with CuPy), library versions, rocmforge
    version and commit."""
    import matplotlib
    import pandas as pd

    env: dict[str, Any] = {"cpu": _cpu_name(), "platform": platform.platform(),
                           "python": platform.python_version(), "numpy": np.__version__,
                           "pandas": pd.__version__, "matplotlib": matplotlib.__version__,
                           "rocmforge": __version__, "rocmforge_commit": _git_commit()}
    env.update(_gpu_info())
    return env


# ---- running ------------------------------------------------------------------------------------------


def _labels(paths: Sequence[Path]) -> list[str]:
    out: list[str] = []
    for p in paths:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem)
        label, k = base, 2
        while label in out:
            label, k = f"{base}-{k}", k + 1
        out.append(label)
    return out


def _free_device_memory() -> None:
    # llama-bench runs next on the same GPU: hand back what our engine's pool still caches
    gc.collect()  # the engine's arrays may sit in reference cycles
    if "cupy" in sys.modules:
        try:
            sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
        except Exception:
            pass


def _present(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and np.isnan(v)))


def _publish(tmp: Path, out: Path) -> None:
    """Move tmp/data and tmp/report.html over out's (a previous report's go to tmp, then away)."""
    for name in (DATA, PAGE):  # the old ones aside first, so that a failure here loses none of them
        if (out / name).exists():
            os.replace(out / name, tmp / f"old-{name}")
    for name in (DATA, PAGE):
        os.replace(tmp / name, out / name)


def run_report(models: Sequence[str], out: str | Path, *, backend: Any = "auto",
               backend_flags: Sequence[str] = ("--backend", "auto"), n_prompt: int = 512, n_gen: int = 128,
               reps: int = 3, llama_dir: str | Path | None = None, timeout: float | None = 3600.0,
               progress: Callable[[str], None] = _stderr) -> Path:
    """Bench each model with rocmforge (and llama-bench where found), profile one decode step, write
    out/data/ and out/report.html; returns the page's path. `backend` is an Engine backend or a function
    making one per model; backend_flags are the CLI flags that choose it (for the commands on the page).
    llama_dir: where llama-bench is (LlamaCppNotFound if it is not there); None: looked for as find_tool
    does, the page without llama.cpp's numbers where it is not found.
    Written to a temporary directory in `out` and moved in at the end: a failed run leaves no part."""
    from . import bench
    from .engine import Engine
    from .gguf import open_model

    if not models:
        raise ValueError("no model to report on")
    if not n_prompt and not n_gen:
        raise ValueError("-p 0 and -n 0: nothing to run")
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)  # up front: an unwritable DIR fails before any run
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        data = tmp / DATA
        data.mkdir()
        flags = [str(f) for f in backend_flags]
        run_flags = ["-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps)]
        paths = []
        for m in models:
            with open_model(m) as f:  # a known name (fetched) or a path; all checked before any run
                paths.append(Path(f.path))
        llama: dict[str, Any] = {"found": False, "note": "", "tool": None, "build": {}}
        try:
            llama["tool"] = str(find_tool("llama-bench", llama_dir))
            llama["found"] = True
        except LlamaCppNotFound as e:
            if llama_dir is not None:  # a build named and not there: refused before any run
                raise
            llama["note"] = str(e)
            progress(f"llama.cpp: {e}; the report will have rocmforge's numbers only")
        labels = _labels(paths)
        report_cmd = ["rocmforge", "report", *(a for m in models for a in ("--model", m)), "--out", str(out),
                      *flags, *run_flags, *(["--llama-dir", str(llama_dir)] if llama_dir is not None else [])]
        commands = [{"what": "this report", "command": shlex.join(report_cmd)}]
        meta = []
        tests = " ".join(t for t in (n_prompt and f"pp{n_prompt}", n_gen and f"tg{n_gen}") if t)
        for i, (m, path, label) in enumerate(zip(models, paths, labels, strict=True), 1):
            tag = f"[{i}/{len(models)}] {label}"
            progress(f"{tag}: loading {path}")
            eng = Engine.from_gguf(path, backend=backend() if callable(backend) else backend,
                                   max_ctx=max(n_prompt + 1, n_gen + 1, 16))
            progress(f"{tag}: rocmforge bench {tests}, {reps} repetition(s) on {eng.backend.device_name}")
            recs = bench.bench(eng, pp=[n_prompt] if n_prompt else [], tg=[n_gen] if n_gen else [],
                               reps=reps)
            with open(data / OURS_JSONL, "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in recs)
            commands.append({"what": f"{label}: rocmforge bench", "command": shlex.join(
                ["rocmforge", "bench", "--model", str(path), *flags, *run_flags])})
            # the profiled step sits in the middle of a tg run: its attention reads that many rows
            depth = max(1, n_gen // 2)
            progress(f"{tag}: one timed decode step at position {depth}")
            eng.reset()
            eng.prefill(np.random.default_rng(0).integers(0, eng.config.n_vocab, depth).tolist())
            step = eng.step(timed=True)
            tm = step.timings
            timings_frame(tm).to_csv(data / f"ops_{label}.csv", index=False)
            meta.append({"label": label, "model": m, "path": str(path), "file": path.name,
                         "device": eng.backend.device_name, "backend": eng.backend.name,
                         "timing_mode": tm.mode, "wall_us": tm.wall_us, "position": step.position,
                         "ops_csv": f"ops_{label}.csv"})
            del eng, step, tm
            _free_device_memory()
            if llama["found"]:
                progress(f"{tag}: llama-bench {tests}, {reps} repetition(s)")
                br = run_bench(path, n_prompt, n_gen, reps, llama_dir=llama_dir, timeout=timeout)
                with open(data / LLAMA_JSONL, "a") as fh:
                    fh.write(br.jsonl)
                commands.append({"what": f"{label}: llama-bench", "command": br.run.command_line})
                row = br.frame.iloc[0]
                keys = ("build_commit", "build_number", "gpu_info", "backends", "cpu_info")
                llama["build"] = {k: str(row[k]) for k in keys if k in row and _present(row[k])}
                if shutil.which("ncu"):  # llama.cpp's own kernels of a decode token at the same position
                    progress(f"{tag}: llama.cpp's kernels of one decode token under ncu")
                    try:
                        kp = run_kernel_profile(path, depth=depth, llama_dir=llama_dir, timeout=timeout)
                    except LlamaCppError as e:
                        progress(f"{tag}: llama.cpp under ncu failed ({e}); no op-by-op table")
                    else:
                        kp.frame.to_csv(data / f"llama_kernels_{label}.csv", index=False)
                        meta[-1]["llama_kernels_csv"] = f"llama_kernels_{label}.csv"
                        commands.append({"what": f"{label}: llama.cpp's kernels",
                                         "command": kp.run.command_line})
        commands.append({"what": "rebuild this page from data/", "command": shlex.join(
            ["rocmforge", "report", "--from", str(out)])})
        record = {"created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "out": str(out),
                  "environment": environment(), "settings": {"n_prompt": n_prompt, "n_gen": n_gen,
                                                             "reps": reps, "backend_flags": flags},
                  "models": meta, "llama_cpp": llama, "commands": commands}
        (data / ENV_FILE).write_text(json.dumps(record, indent=2) + "\n")
        progress("rendering the page")
        (tmp / PAGE).write_text(render(data))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # only our empty temp dir was in it
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # a previous report's files, moved aside
    return out / PAGE


def rebuild(out: str | Path) -> Path:
    """Render out/report.html again from out/data alone (no model, no GPU); returns its path."""
    out = Path(out)
    if not (out / DATA / ENV_FILE).is_file():
        raise ValueError(f"{out / DATA / ENV_FILE} not found: --from wants the DIR a `rocmforge report --out "
                         f"DIR` run wrote")
    part = out / f"{PAGE}.part"
    try:
        part.write_text(render(out / DATA))
        os.replace(part, out / PAGE)
    finally:
        part.unlink(missing_ok=True)
    return out / PAGE


# ---- reading the records back ---------------------------------------------------------------------


def load_bench(data: str | Path) -> pd.DataFrame:
    """Both tools' bench records of a report's data/ in one frame (tool: rocmforge / llama.cpp)."""
    import pandas as pd

    data = Path(data)
    frames = [read_bench_jsonl(data / name, tool) for name, tool in
              ((OURS_JSONL, "rocmforge"), (LLAMA_JSONL, "llama.cpp")) if (data / name).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else read_bench_jsonl(os.devnull)


def median_ts(df: pd.DataFrame) -> pd.Series:
    """Each record's median t/s over its runs (samples_ts), else its avg_ts: llama-bench's first prompt run
    is often a slow outlier (22k of ~54k t/s on an H100) that drags the mean but not the median."""
    import numpy as np
    import pandas as pd

    def one(r) -> float:
        s = r.get("samples_ts")
        runs = isinstance(s, (list, tuple, np.ndarray)) and len(s) > 0
        return float(np.median(s)) if runs else float(r["avg_ts"])

    return df.apply(one, axis=1) if len(df) else pd.Series(dtype=float, index=df.index)


def side_by_side(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, test): each tool's median t/s over its runs (median_ts) and the std of its
    runs, and rocmforge / llama.cpp."""
    import pandas as pd

    cols = {}
    df = df.assign(median_ts=median_ts(df))
    for tool in ("rocmforge", "llama.cpp"):
        sub = df[df["tool"] == tool].groupby(["model", "test"], sort=False)
        cols[f"{tool} t/s"] = sub["median_ts"].mean()
        cols[f"{tool} ±"] = sub["stddev_ts"].mean()
    t = pd.DataFrame(cols)
    t["rocmforge / llama.cpp"] = t["rocmforge t/s"] / t["llama.cpp t/s"]
    return t


def step_timings(frame: pd.DataFrame, mode: str, wall_us: float | None) -> StepTimings:
    """A step's timings back from its timings_frame CSV (the IDLE row is rebuilt from the wall time)."""
    import pandas as pd

    rows = frame[frame["op"] != IDLE]
    kern = "kernel_us" in frame  # trace mode's kernel times
    st = StepTimings([OpTiming(str(r.name), str(r.op), tuple(ast.literal_eval(str(r.shape))), float(r.us),
                               float(r.kernel_us) if kern and pd.notna(r.kernel_us) else None)
                      for r in rows.itertuples(index=False)], mode, wall_us)
    if "bytes_read" in frame:
        for r in rows.itertuples(index=False):
            if pd.notna(r.bytes_read):
                st.costs[str(r.name)] = Cost(int(r.bytes_read), int(r.bytes_written), int(r.flops))
    return st


# ---- the page -------------------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))  # no pyplot: the caller's matplotlib backend is left alone
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _share_figure(summ: pd.DataFrame, title: str) -> str:
    s = summ["share"].sort_values() * 100
    fig, ax = _figure(7, 0.3 * len(s) + 1)
    ax.barh(s.index, s.values, color=["#999999" if op == IDLE else "#3b75af" for op in s.index])
    ax.set_xlabel("share of the step (%)")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _bench_figure(t: pd.DataFrame) -> str:
    fig, ax = _figure(7, 0.45 * len(t) + 1.2)
    y = np.arange(len(t))
    for k, tool in enumerate(("rocmforge", "llama.cpp")):
        v = t[f"{tool} t/s"].to_numpy(dtype=float)
        ok = np.isfinite(v) & (v > 0)  # a tool's missing tests get no bar (log axis)
        if ok.any():
            ax.barh(y[ok] + (0.2 if k else -0.2), v[ok], height=0.4, label=tool)
    ax.set_yticks(y, [f"{m} {test}" for m, test in t.index])
    ax.invert_yaxis()  # the table's order, top down
    ax.set_xscale("log")
    ax.set_xlabel("tokens/s")
    ax.legend()
    return _png(fig)


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _table(df: pd.DataFrame, formats: dict[str, str], index: bool = True) -> str:
    d = df.copy()
    for c, spec in formats.items():
        if c in d:
            d[c] = [_fmt(v, spec) for v in d[c]]
    return d.to_html(index=index, border=0, na_rep="", escape=True, classes="t")


def _kv(items: dict[str, Any]) -> str:
    def text(v: Any) -> str:
        return html.escape(v if isinstance(v, str) else json.dumps(v))

    rows = "".join(f"<tr><th>{text(str(k))}</th><td>{text(v)}</td></tr>" for k, v in items.items())
    return f'<table class="t">{rows}</table>'


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table.t{border-collapse:collapse;margin:.5em 0}table.t td,table.t th{padding:2px 8px;"
       "border-bottom:1px solid #ddd;text-align:right}table.t th{text-align:left}"
       "pre{background:#f4f4f4;padding:.6em;overflow-x:auto}.note{background:#fff3cd;padding:.5em}")


def _op_by_op(ours: pd.DataFrame, theirs: pd.DataFrame, label: str) -> list[str]:
    """Our decode step beside llama.cpp's kernels of one token (ncu), by part of the step and by op."""
    col = "kernel_us" if "kernel_us" in ours and ours["kernel_us"].notna().any() else "us"
    ours = ours[ours["op"] != IDLE].assign(us=ours[col].fillna(0.0))
    part, by_op = compare_ops(ours, theirs, by="part"), compare_ops(ours, theirs, by="op")
    fmt = {"rocmforge_us": ".1f", "llama_cpp_us": ".1f", "ratio": ".2f"}
    fig, ax = _figure(7, 0.4 * len(part) + 1.2)
    part[["rocmforge_us", "llama_cpp_us"]].iloc[::-1].plot.barh(ax=ax)
    ax.set_xlabel("us of kernels in one decode step")
    ax.set_title(f"{label}: by part of the step, rocmforge vs llama.cpp")
    return [f"<h3>{html.escape(label)}: op by op against llama.cpp's kernels</h3>",
            f"<p>llama.cpp: {len(theirs)} kernels of one decode token at the same position, each timed alone "
            f"under Nsight Compute ({theirs['us'].sum():.1f} us in all); ours: "
            f"{'each kernel&#39;s own time (trace)' if col == 'kernel_us' else 'the per-op times above'}. "
            f"The two fuse differently, so the parts of the step compare best.</p>",
            _table(part, fmt), _png(fig), _table(by_op, fmt)]


def render(data: str | Path) -> str:
    """The report page from a report's data/ directory alone."""
    import pandas as pd

    data = Path(data)
    rec = json.loads((data / ENV_FILE).read_text())
    e = html.escape
    st = rec["settings"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rocmforge report</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>rocmforge vs llama.cpp</h1><p>Run {e(rec['created'])}: {len(rec['models'])} model(s), "
             f"-p {st['n_prompt']} -n {st['n_gen']} -r {st['reps']}, {e(' '.join(st['backend_flags']))}.</p>",
             "<h2>Environment</h2>", _kv(rec["environment"])]
    llama = rec["llama_cpp"]
    if llama["found"]:
        parts += ["<h3>llama.cpp</h3>", _kv({"tool": llama["tool"], **llama["build"]})]
    else:
        parts.append(f"<p class='note'>llama.cpp was not found ({e(llama['note'])}): the table has "
                     f"rocmforge's numbers only.</p>")

    parts.append("<h2>Speed (tokens/s, the median of each tool's runs)</h2>")
    bench = load_bench(data)
    if bench.empty:
        parts.append("<p>No bench records.</p>")
    else:
        t = side_by_side(bench)
        parts += [_table(t, {c: ".2f" for c in t.columns if c != "rocmforge / llama.cpp"}
                         | {"rocmforge / llama.cpp": ".3f"}), _bench_figure(t)]
        devices = sorted(set(bench["gpu_info"].dropna().astype(str)))
        parts.append(f"<p>Devices in the records: {e(', '.join(devices))}.</p>")

    for m in rec["models"]:
        frame = pd.read_csv(data / m["ops_csv"])
        tm = step_timings(frame, m["timing_mode"], m["wall_us"])
        summ = summary(tm)
        wall = "" if m["wall_us"] is None else f", step {m['wall_us'] / 1e3:.3f} ms"
        mode = TIMING_MODES.get(m["timing_mode"], "")
        parts += [f"<h2>{e(m['label'])}: one decode step</h2>",
                  f"<p>{e(m['path'])} on {e(m['device'])} ({e(m['backend'])}), position {m['position']}"
                  f"{e(wall)}. Timing mode <b>{e(m['timing_mode'])}</b>: {e(mode)}. {IDLE}: the part of the "
                  f"step's time the per-op sum does not explain.</p>",
                  _table(summ, {"us": ".1f", "share": ".1%", "bytes": ".0f", "flops": ".0f", "GB/s": ".2f"}),
                  _share_figure(summ, f"{m['label']}: share of one decode step per op ({m['timing_mode']})")]
        if m.get("llama_kernels_csv"):
            parts += _op_by_op(frame, pd.read_csv(data / m["llama_kernels_csv"]), m["label"])

    parts += ["<h2>Commands</h2><p>What ran, to run it again:</p><pre>",
              "\n".join(f"# {e(c['what'])}\n{e(c['command'])}" for c in rec["commands"]),
              "</pre></body></html>"]
    return "\n".join(parts) + "\n"
