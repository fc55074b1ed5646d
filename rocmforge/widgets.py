"""Step through generation one token at a time: Stepper holds the state (usable headless, in tests or a
script); StepperWidget is a thin ipywidgets view of it for a notebook (ipywidgets is imported only there,
so the package works without it: pip install rocmforge[notebook])."""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .engine import Engine, StepResult, check_sampling, sample_seeded

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Candidate:
    """One of the most likely next tokens: its id, its text and its probability under softmax(logits)."""

    token: int
    piece: str
    p: float


class Stepper:
    """Generation one token at a time, with what there is to look at after each: the text so far, the
    newest token, the most likely next tokens, the step's per-op timings and memory counters.

    Chooses tokens as Engine.generate does (engine.sample_seeded: greedy at temperature 0, else top-k /
    top-p drawn with the seed and the token's position; seed None draws one at each reset, `seed_used`), so
    the same settings and seed give the same tokens. `start(prompt)` resets the
    engine's context and prefills the prompt; `step()` chooses a token and runs the decode step that
    feeds it, whose logits give the next candidates; `play(n)` steps n times; `reset()` forgets it all.
    """

    def __init__(self, engine: Engine, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, n_candidates: int = 5, timed: bool = True) -> None:
        check_sampling(temperature, top_k, top_p)
        self.engine = engine
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.n_candidates = n_candidates
        self.timed = timed
        self.reset()

    def reset(self) -> None:
        """Back to before start(): no prompt, no tokens, the engine's context cleared."""
        self.engine.reset()
        self.prompt = ""
        self.prompt_ids: list[int] = []
        self.ids: list[int] = []  # generated tokens
        self.text = ""  # their text
        self.piece = ""  # the newest token's text (may be "" until its UTF-8 is whole)
        self.done = ""  # why generation ended ("eos", "max_ctx=... reached"); "" while it can go on
        self.logits: np.ndarray | None = None  # what chooses the next token
        self.last: StepResult | None = None
        self.memory_history: list[dict[str, int]] = []
        self.seed_used = secrets.randbits(64) if self.seed is None else int(self.seed)
        self._decoder = None

    @property
    def started(self) -> bool:
        return self.logits is not None

    @property
    def token(self) -> int | None:
        """The newest generated token."""
        return self.ids[-1] if self.ids else None

    @property
    def position(self) -> int:
        return self.engine.n_past

    def start(self, prompt: str) -> None:
        """Reset, then prefill the prompt: the candidates are then those for the first new token."""
        self.reset()
        ids = self.engine.tokenizer.encode(prompt)
        if not ids:
            raise ValueError("the prompt encodes to no tokens")
        self.prompt, self.prompt_ids = prompt, ids
        self.logits = self.engine.prefill(ids)
        self._decoder = self.engine.tokenizer.stream()

    def step(self) -> int | None:
        """Choose the next token and run the decode step that feeds it; the token, or None when generation
        has ended (a stop token, or the context is full)."""
        if not self.started:
            raise RuntimeError("start(prompt) first")
        if self.done:
            return None
        tok = sample_seeded(self.logits, self.temperature, self.top_k, self.top_p, self.seed_used,
                            self.engine.n_past)
        if self.engine.tokenizer.is_stop(tok):
            self.done = "eos"
            return None
        self.ids.append(tok)
        self.piece = self._decoder.push(tok)
        self.text += self.piece
        if self.engine.n_past >= self.engine.max_ctx:  # no room to feed it: this token is the last
            rest = self._decoder.flush()  # the text is final: show any incomplete UTF-8 as is
            self.piece += rest
            self.text += rest
            self.done = f"max_ctx={self.engine.max_ctx} reached"
            return tok
        res = self.engine.step(tok, timed=self.timed, logits=True)
        self.last, self.logits = res, res.logits
        self.memory_history.append(dict(res.memory))
        return tok

    def play(self, n: int) -> list[int]:
        """Step up to n times (fewer when generation ends); the tokens made."""
        out = []
        for _ in range(n):
            tok = self.step()
            if tok is None:
                break
            out.append(tok)
        return out

    def candidates(self, k: int | None = None) -> list[Candidate]:
        """The k most likely next tokens under softmax(logits): the model's distribution, before the
        temperature and the top-k / top-p cuts reshape it."""
        if self.logits is None:
            return []
        k = self.n_candidates if k is None else k
        z = self.logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:k]
        tok = self.engine.tokenizer
        return [Candidate(int(i), tok.token_to_piece(int(i)), float(p[i])) for i in top]

    def timings_frame(self) -> pd.DataFrame | None:
        """The last decode step's per-op timings as a DataFrame (None before a timed step)."""
        return self.last.timings_frame() if self.last is not None and self.last.timings else None

    @property
    def memory(self) -> dict[str, int]:
        return dict(self.last.memory) if self.last is not None else self.engine.memory()

    def memory_frame(self) -> pd.DataFrame:
        """Memory counters after each step (profile.memory_series)."""
        from .profile import memory_series

        return memory_series(self.memory_history)

    def text_html(self) -> str:
        """The prompt (grey), the generated text and the newest token highlighted, as HTML."""
        old = self.text[:len(self.text) - len(self.piece)] if self.piece else self.text
        new = f"<mark>{html.escape(self.piece)}</mark>" if self.piece else ""
        return (f"<div style='white-space: pre-wrap; font-family: monospace'><span style='color: grey'>"
                f"{html.escape(self.prompt)}</span>{html.escape(old)}{new}</div>")

    def __repr__(self) -> str:
        mode = "greedy" if self.temperature <= 0 else f"T={self.temperature:g}"
        done = f", done: {self.done}" if self.done else ""
        return (f"Stepper({mode}, {len(self.prompt_ids)} prompt + {len(self.ids)} new tokens, position "
                f"{self.position}/{self.engine.max_ctx}{done})")


def _candidates_html(cands: list[Candidate]) -> str:
    """The candidates as a table with a bar for each probability."""
    rows = "".join(
        f"<tr><td style='text-align:right'>{c.token}</td><td><code>{html.escape(repr(c.piece))}</code></td>"
        f"<td style='width:12em'><div style='background:#4c78a8;height:0.9em;width:{100 * c.p:.1f}%'></div>"
        f"</td><td style='text-align:right'>{c.p:.3f}</td></tr>" for c in cands)
    return f"<table><tr><th>id</th><th>token</th><th colspan=2>p</th></tr>{rows}</table>"


def _memory_html(memory: dict[str, int]) -> str:
    return "memory: " + ", ".join(f"{html.escape(k)} {v / 2**20:.2f} MiB" for k, v in memory.items())


class StepperWidget:
    """A notebook view of a Stepper: a prompt box, Step / Play n / Reset buttons, the text with the newest
    token highlighted, the next-token candidates, the step's time per op and the memory counters."""

    def __init__(self, stepper: Stepper, play_n: int = 8) -> None:
        import ipywidgets as w  # only here: the package works without it

        self.stepper = stepper
        self.prompt = w.Textarea(value=stepper.prompt or "The capital of France is",
                                 layout=w.Layout(width="100%"))
        self.step_button = w.Button(description="Step")
        self.play_button = w.Button(description="Play")
        self.play_n = w.BoundedIntText(value=play_n, min=1, max=4096, layout=w.Layout(width="6em"))
        self.reset_button = w.Button(description="Reset")
        self.status = w.HTML()
        self.text = w.HTML()
        self.candidates = w.HTML()
        self.memory = w.HTML()
        self.chart = w.Output()
        self.step_button.on_click(lambda _: self._run(1))
        self.play_button.on_click(lambda _: self._run(self.play_n.value))
        self.reset_button.on_click(lambda _: self.reset())
        buttons = w.HBox([self.step_button, self.play_button, self.play_n, self.reset_button])
        right = w.VBox([w.HTML("<b>next token</b>"), self.candidates, self.memory])
        self.box = w.VBox([self.prompt, buttons, self.status, self.text, w.HBox([self.chart, right])])
        self.refresh()

    def _run(self, n: int) -> None:
        s = self.stepper
        if not s.started or s.prompt != self.prompt.value:  # a new or edited prompt starts over
            s.start(self.prompt.value)
        for _ in range(n):  # shown after each token, so that Play is watched as it goes
            if s.step() is None:
                break
            self.refresh()
        self.refresh()

    def reset(self) -> None:
        self.stepper.reset()
        self.refresh()

    def refresh(self) -> None:
        """Show the stepper's state."""
        s = self.stepper
        tok = "" if s.token is None else f"; newest token {s.token}"
        done = f"; <b>done</b>: {html.escape(s.done)}" if s.done else ""
        self.status.value = (f"position {s.position}/{s.engine.max_ctx}, {len(s.ids)} new tokens"
                             f"{tok}{done}")
        self.text.value = s.text_html() if s.started else "<i>Step to start from the prompt</i>"
        self.candidates.value = _candidates_html(s.candidates())
        self.memory.value = _memory_html(s.memory)
        self._draw_chart()

    def _draw_chart(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        df = self.stepper.timings_frame()
        self.chart.clear_output(wait=True)
        if df is None:
            return
        by_op = df.groupby("op")["us"].sum().sort_values()
        fig, ax = plt.subplots(figsize=(4.5, 0.25 * len(by_op) + 1))
        ax.barh(by_op.index, by_op.values, color="#4c78a8")
        mode = self.stepper.last.timings.mode
        ax.set_xlabel(f"us in the step ({mode} timings)")
        fig.tight_layout()
        with self.chart:
            display(fig)
        plt.close(fig)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)


def stepper_widget(engine: Engine, prompt: str = "", **kwargs: Any) -> StepperWidget:
    """A StepperWidget over a new Stepper(engine, **kwargs) (temperature, top_k, top_p, seed, ...); with a
    prompt, already started from it."""
    s = Stepper(engine, **kwargs)
    if prompt:
        s.start(prompt)
    return StepperWidget(s)
