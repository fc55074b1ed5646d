"""The Stepper driven headless: its tokens are Engine.generate's, its state follows each step, and the
notebook widget over it builds and steps when ipywidgets is installed."""

import importlib.util

import matplotlib
import numpy as np
import pytest

from rocmforge.engine import Engine
from rocmforge.synth import write_tiny_model
from rocmforge.widgets import Stepper

matplotlib.use("Agg")
PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf", "llama")
    return Engine.from_gguf(path, backend="numpy", max_ctx=32)


def _generated(engine, n, **kw):
    engine.reset()
    out = [g.token for g in engine.generate(PROMPT, max_new_tokens=n, **kw)]
    engine.reset()
    return out


def test_greedy_steps_are_generates_tokens(engine):
    want = _generated(engine, 6)
    s = Stepper(engine)
    s.start(PROMPT)
    n_prompt = len(s.prompt_ids)
    assert s.position == n_prompt and s.token is None and s.ids == []
    first = s.step()
    assert first == want[0] and s.token == first and s.position == n_prompt + 1
    assert s.play(5) == want[1:] and s.ids == want
    assert s.text == engine.tokenizer.decode(want)


def test_sampling_with_a_seed_repeats_and_matches_generate(engine):
    kw = dict(temperature=20.0, top_k=50, top_p=0.95, seed=7)  # the tiny model's logits are steep
    want = _generated(engine, 8, **kw)
    runs = []
    for _ in range(2):
        s = Stepper(engine, **kw)
        s.start(PROMPT)
        runs.append(s.play(8))
    assert runs[0] == runs[1] == want
    assert want != _generated(engine, 8)  # sampling leaves greedy's path
    other = Stepper(engine, **{**kw, "seed": 8})
    other.start(PROMPT)
    assert other.play(8) != want


def test_each_step_leaves_candidates_timings_and_memory(engine):
    s = Stepper(engine, n_candidates=4)
    with pytest.raises(RuntimeError, match="start"):
        s.step()
    assert s.candidates() == []
    s.start(PROMPT)
    c = s.candidates()
    assert len(c) == 4 and c[0].token == engine.next_token  # the greedy choice leads
    assert all(a.p >= b.p for a, b in zip(c, c[1:], strict=False)) and 0 < sum(x.p for x in c) <= 1 + 1e-9
    assert s.timings_frame() is None
    s.play(3)
    df = s.timings_frame()
    assert df is not None and "MUL_MAT" in set(df.op)
    assert df["us"].sum() == pytest.approx(s.last.timings.wall_us)
    logits = s.logits.astype(np.float64)
    p = np.exp(logits - logits.max())
    assert s.candidates(1)[0].p == pytest.approx(p.max() / p.sum())
    assert len(s.memory_history) == 3 and list(s.memory_frame().index) == [0, 1, 2]
    assert s.memory == engine.memory()
    html = s.text_html()
    assert "<mark>" in html and s.prompt in html
    assert "3 new tokens" in repr(s) and "greedy" in repr(s)


def test_reset_and_start_over(engine):
    s = Stepper(engine)
    s.start(PROMPT)
    first = s.play(4)
    s.reset()
    assert not s.started and s.ids == [] and s.text == "" and engine.n_past == 0
    s.start(PROMPT)
    assert s.play(4) == first


def test_generation_ends_when_the_context_is_full(engine):
    s = Stepper(engine)
    s.start(PROMPT)
    room = engine.max_ctx - len(s.prompt_ids)
    made = s.play(room + 5)
    assert len(made) == room + 1 or s.done == "eos"  # the last token needs no room: nothing feeds it
    if s.done != "eos":
        assert s.done.startswith("max_ctx") and s.step() is None and engine.n_past == engine.max_ctx
    assert made == _generated(engine, room + 5)


def test_untimed_steps_have_no_frame(engine):
    s = Stepper(engine, timed=False)
    s.start(PROMPT)
    s.step()
    assert s.timings_frame() is None and s.last is not None


@pytest.mark.skipif(importlib.util.find_spec("ipywidgets") is None, reason="ipywidgets is not installed")
def test_the_widget_steps_plays_and_resets(engine):
    from rocmforge.widgets import StepperWidget, stepper_widget

    w = stepper_widget(engine, prompt=PROMPT)
    assert isinstance(w, StepperWidget) and w.prompt.value == PROMPT
    w.step_button.click()
    s = w.stepper
    assert len(s.ids) == 1 and "<mark>" in w.text.value and f"newest token {s.token}" in w.status.value
    assert "<table" in w.candidates.value and "MiB" in w.memory.value
    w.play_n.value = 3
    w.play_button.click()
    assert len(s.ids) == 4
    w.prompt.value = "a dog"  # an edited prompt starts over
    w.step_button.click()
    assert s.prompt == "a dog" and len(s.ids) == 1
    w.reset_button.click()
    assert not s.started and "Step to start" in w.text.value
    assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()


def test_the_module_imports_without_ipywidgets(engine, monkeypatch):
    import importlib
    import sys

    import rocmforge.widgets

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now raises ImportError
    mod = importlib.reload(rocmforge.widgets)
    s = mod.Stepper(engine)
    s.start(PROMPT)
    assert s.step() is not None
    with pytest.raises(ImportError):
        mod.StepperWidget(s)
