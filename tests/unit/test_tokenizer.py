"""rocmforge.tokenizer against llama.cpp token ids recorded by scripts/record_tokenizer_refs.py.

Three kinds of vocabularies are checked against data/tokenizer_refs.json:
- the real models (byte-level BPE, pre `smollm` and `qwen2`), marked `models`;
- the qwen2.5 vocabulary re-labelled with other `tokenizer.ggml.pre` values (llama-bpe with
  ignore_merges, gpt-2, default, ...), also `models` since it needs the qwen file;
- synthetic SentencePiece vocabularies generated here (scores, byte tokens, control and user-defined
  tokens), written to a GGUF with gguf.GGUFWriter and read back; no model file needed.
The record script imports the generators below, so changing them means re-recording.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from rocmforge.gguf import GGUFFile
from rocmforge.tokenizer import SUPPORTED_PRE, Tokenizer

REFS_PATH = Path(__file__).resolve().parents[2] / "data" / "tokenizer_refs.json"
REAL_MODELS = ["smollm2-135m", "qwen2.5-0.5b"]

# --- synthetic vocabularies (shared with scripts/record_tokenizer_refs.py) --------------------------------

_SPM_CORPUS = """
The quick brown fox jumps over the lazy dog. A tokenizer splits text into pieces, and the pieces
are merged by score until no pair is left. Hello world, hello there! We don't know what they'll say,
but it's fine: numbers like 123 and 4567 appear too, as do words such as information, international,
interesting, interest, station, nation, national, tokenization, tokenize, token, tokens and tokenizer.
Café, naïve, résumé, über and straße keep their accents. Programs print("hello") and return 0;
def main(): pass. The the the and and and of of in in to to is is that that for for it it with with.
Where there is a will there is a way; whatever happens, we will answer every question in the end.
Reading, writing, running, jumping, thinking, something, nothing, everything and anything else here.
"""

# name -> write_spm_gguf kwargs
SPM_VARIANTS: dict[str, dict[str, Any]] = {
    "spm-synthetic": {"add_space_prefix": True},
    "spm-synthetic-noprefix": {"add_space_prefix": False},
}

# name -> (real model whose vocabulary is reused, tokenizer.ggml.pre written instead of its own)
BPE_VARIANTS: dict[str, tuple[str, str]] = {
    "qwen-vocab-llama-bpe": ("qwen2.5-0.5b", "llama-bpe"),
    "qwen-vocab-gpt-2": ("qwen2.5-0.5b", "gpt-2"),
    "qwen-vocab-default": ("qwen2.5-0.5b", "default"),
    "qwen-vocab-gpt-4o": ("qwen2.5-0.5b", "gpt-4o"),
    "qwen-vocab-tekken": ("qwen2.5-0.5b", "tekken"),
    "qwen-vocab-qwen35": ("qwen2.5-0.5b", "qwen35"),
}


def spm_metadata(add_space_prefix: bool = True, n_merges: int = 400) -> dict[str, Any]:
    """A small SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens, BPE pieces trained on
    _SPM_CORPUS (score -rank), single characters (lower scores), then two control and one user-defined
    token. Deterministic."""
    words = Counter("▁" + w for w in _SPM_CORPUS.split())
    seqs = {w: list(w) for w in words}
    chars = sorted({c for w in words for c in w}
                   | set(string.ascii_letters + string.digits + string.punctuation))
    seen = set(chars)
    pieces: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, f in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:], strict=False):
                pairs[a, b] += f
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))  # most frequent, ties by text
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
        if a + b not in seen:
            seen.add(a + b)
            pieces.append(a + b)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE...
    scores = [0.0] * len(tokens)
    for k, p in enumerate(pieces + chars):
        tokens.append(p)
        types.append(1)
        scores.append(-float(k))
    for t, ty in (("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)):
        tokens.append(t)
        types.append(ty)
        scores.append(0.0)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": add_space_prefix,
    }


def spm_vocab_hash(md: Mapping[str, Any]) -> str:
    """Fingerprint of a generated vocabulary, to notice a generator change that needs re-recording."""
    blob = json.dumps([list(md["tokenizer.ggml.tokens"]), [float(x) for x in md["tokenizer.ggml.scores"]],
                       [int(x) for x in md["tokenizer.ggml.token_type"]],
                       bool(md["tokenizer.ggml.add_space_prefix"])], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_vocab_gguf(path: Path, md: Mapping[str, Any]) -> None:
    """A vocab-only GGUF (tiny llama hparams, no tensors) holding the tokenizer keys of `md`."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(md["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in md:
        w.add_tokenizer_pre(md["tokenizer.ggml.pre"])
    w.add_token_list(list(md["tokenizer.ggml.tokens"]))
    if "tokenizer.ggml.merges" in md:
        w.add_token_merges(list(md["tokenizer.ggml.merges"]))
    if "tokenizer.ggml.scores" in md:
        w.add_token_scores([float(x) for x in md["tokenizer.ggml.scores"]])
    w.add_token_types([int(x) for x in md["tokenizer.ggml.token_type"]])
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id)):
        if f"tokenizer.ggml.{key}" in md:
            add(int(md[f"tokenizer.ggml.{key}"]))
    for key, add in (("add_bos_token", w.add_add_bos_token), ("add_space_prefix", w.add_add_space_prefix)):
        if f"tokenizer.ggml.{key}" in md:
            add(bool(md[f"tokenizer.ggml.{key}"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_spm_gguf(path: Path, add_space_prefix: bool = True) -> dict[str, Any]:
    md = spm_metadata(add_space_prefix=add_space_prefix)
    write_vocab_gguf(path, md)
    return md


def bpe_variant_metadata(base: Mapping[str, Any], pre: str) -> dict[str, Any]:
    """A real model's tokenizer keys with another pre-tokenizer; add_bos_token dropped so llama.cpp's
    per-pre default applies (llama-bpe: BOS on)."""
    md = {k: v for k, v in base.items()
          if k.startswith("tokenizer.ggml.") and k != "tokenizer.ggml.add_bos_token"}
    md["tokenizer.ggml.pre"] = pre
    return md


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refs() -> dict[str, Any]:
    if not REFS_PATH.exists():
        pytest.skip(f"{REFS_PATH} missing: run scripts/record_tokenizer_refs.py")
    return json.loads(REFS_PATH.read_text(encoding="utf-8"))


_FILES: dict[str, GGUFFile] = {}


def _open_model(name: str) -> GGUFFile:
    if name not in _FILES:
        from rocmforge import hub

        try:
            path = hub.resolve(name)
        except Exception as e:  # offline, no cache
            pytest.skip(f"model {name} unavailable: {e}")
        _FILES[name] = GGUFFile.open(path)
    return _FILES[name]


@pytest.fixture(scope="module", params=REAL_MODELS)
def real(request: pytest.FixtureRequest, refs: dict[str, Any]) -> tuple[str, Tokenizer, dict[str, Any]]:
    name = request.param
    return name, Tokenizer.from_gguf(_open_model(name)), refs["models"][name]


def _mismatches(tok: Tokenizer, strings: list[str], ref: dict[str, Any]) -> list[str]:
    bad = []
    for s, ids, ids_add, ids_np in zip(strings, ref["ids"], ref["ids_add_special"], ref["ids_no_parse"],
                                       strict=True):
        for mode, got, want in (
            ("add_bos=False", tok.encode(s, add_bos=False), ids),
            ("add_bos=None", tok.encode(s), ids_add),
            ("parse_special=False", tok.encode(s, add_bos=False, parse_special=False), ids_np),
        ):
            if got != want:
                bad.append(f"{s!r} [{mode}]: ours {got} llama.cpp {want}")
    return bad


def _check_specials(tok: Tokenizer, ref: dict[str, Any]) -> None:
    assert tok.n_vocab == ref["n_vocab"]
    assert tok.bos_id == ref["bos"]
    assert tok.eos_id == ref["eos"]
    assert tok.eot_id == ref["eot"]
    assert tok.stop_ids == set(ref["eog"])
    assert tok.add_bos == ref["add_bos"]


# --- real models ------------------------------------------------------------------------------------------


@pytest.mark.models
def test_ids_match_llamacpp(real, refs):
    name, tok, ref = real
    bad = _mismatches(tok, refs["strings"], ref)
    assert not bad, f"{name}: {len(bad)} mismatches\n" + "\n".join(bad[:20])


@pytest.mark.models
def test_forced_bos(real, refs):
    _, tok, ref = real
    for s, ids in zip(refs["strings"], ref["ids"], strict=True):
        assert tok.encode(s, add_bos=True) == [tok.bos_id, *ids]


@pytest.mark.models
def test_special_ids_and_stop_ids(real):
    name, tok, ref = real
    _check_specials(tok, ref)
    texts = {tok.id_to_token(i) for i in tok.stop_ids}
    assert {"<|im_end|>", "<|endoftext|>"} <= texts
    assert tok.id_to_token(tok.eos_id) == "<|im_end|>"
    # both <|im_end|> and <|endoftext|> qualify as EOT; llama.cpp keeps the first in its hash map's order
    eot = {"smollm2-135m": "<|endoftext|>", "qwen2.5-0.5b": "<|im_end|>"}[name]
    assert tok.id_to_token(tok.eot_id) == eot
    assert tok.eot_id in tok.stop_ids
    assert tok.model == "gpt2"
    assert tok.pre == {"smollm2-135m": "smollm", "qwen2.5-0.5b": "qwen2"}[name]


@pytest.mark.models
def test_pieces_match_llamacpp(real):
    _, tok, ref = real
    for i, want in zip(ref["piece_ids"], ref["pieces_hex"], strict=True):
        assert tok.token_to_bytes(i).hex() == want, (i, tok.id_to_token(i))
    ctrl = tok.token_to_id("<|im_end|>")
    assert tok.token_to_piece(ctrl) == "<|im_end|>"
    assert tok.token_to_piece(ctrl, special=False) == ""


@pytest.mark.models
def test_decode_round_trips(real, refs):
    _, tok, ref = real
    for s, ids in zip(refs["strings"], ref["ids"], strict=True):
        assert tok.decode(ids) == s
        assert tok.decode(tok.encode(s, add_bos=True), skip_special=True) == tok.decode(
            [i for i in ids if not tok.is_control(i)])
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert tok.decode(ids, skip_special=True) == "user\nhi"


@pytest.mark.models
def test_stream_decoder_yields_only_complete_text(real):
    _, tok, _ = real
    text = "héllo 世界 🎉 👨‍👩‍👧‍👦 done"
    ids = tok.encode(text, add_bos=False)
    dec = tok.stream()
    parts = [dec.push(i) for i in ids]
    parts.append(dec.flush())
    assert "".join(parts) == text
    assert not any("\ufffd" in p for p in parts)
    assert any(p == "" for p in parts)  # multi-byte characters split over tokens were held back


@pytest.mark.models
def test_chat_template_renders_chatml(real):
    name, tok, _ = real
    msgs = [{"role": "user", "content": "hi"}]
    system = {
        "smollm2-135m": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "qwen2.5-0.5b": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    }[name]
    want = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(msgs) == want
    assert tok.apply_chat_template(msgs, add_generation_prompt=False) == want.removesuffix(
        "<|im_start|>assistant\n")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    want = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n")
    assert tok.apply_chat_template(msgs) == want
    ids = tok.encode(want)
    assert ids.count(tok.token_to_id("<|im_start|>")) == 5


# --- the qwen vocabulary under other pre-tokenizers --------------------------------------------------------


@pytest.mark.models
@pytest.mark.parametrize("variant", list(BPE_VARIANTS))
def test_pre_tokenizer_variants_match_llamacpp(variant, refs):
    base, pre = BPE_VARIANTS[variant]
    md = bpe_variant_metadata(_open_model(base).metadata, pre)
    tok = Tokenizer(md)
    ref = refs["models"][variant]
    assert tok.pre == pre
    _check_specials(tok, ref)
    bad = _mismatches(tok, refs["strings"], ref)
    assert not bad, f"{variant}: {len(bad)} mismatches\n" + "\n".join(bad[:20])


# --- synthetic SentencePiece vocabularies (no model files) -------------------------------------------------


@pytest.fixture(scope="module", params=list(SPM_VARIANTS))
def spm(request, refs, tmp_path_factory) -> tuple[Tokenizer, dict[str, Any]]:
    name = request.param
    path = tmp_path_factory.mktemp("spm") / f"{name}.gguf"
    md = write_spm_gguf(path, **SPM_VARIANTS[name])
    ref = refs["models"][name]
    assert spm_vocab_hash(md) == ref["vocab_sha256"], "SPM generator changed: re-run record_tokenizer_refs.py"
    return Tokenizer.from_gguf(GGUFFile.open(path)), ref


def test_spm_ids_match_llamacpp(spm, refs):
    tok, ref = spm
    assert tok.model == "llama"
    _check_specials(tok, ref)
    bad = _mismatches(tok, refs["strings"], ref)
    assert not bad, f"{len(bad)} mismatches\n" + "\n".join(bad[:20])


def test_spm_pieces_match_llamacpp(spm):
    tok, ref = spm
    for i, want in zip(ref["piece_ids"], ref["pieces_hex"], strict=True):
        assert tok.token_to_bytes(i).hex() == want, (i, tok.id_to_token(i))


def test_spm_decode_round_trips(spm, refs):
    tok, ref = spm
    specials = ("<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<tool>")
    for s in refs["strings"]:
        if any(t in s for t in specials):
            continue  # a prefix space is added after every special token: not reversible
        assert tok.decode(tok.encode(s), skip_special=True) == s
        assert tok.decode(tok.encode(s)) == "<s>" + s
        assert tok.decode(tok.encode(s, add_bos=False)) == s


def test_spm_byte_fallback_and_stream(spm):
    tok, _ = spm
    ids = tok.encode("世", add_bos=False)
    assert [tok.id_to_token(i) for i in ids][-3:] == ["<0xE4>", "<0xB8>", "<0x96>"]
    dec = tok.stream()
    parts = [dec.push(i) for i in ids]
    assert parts[-3:] == ["", "", "世"]


# --- behaviour without references -------------------------------------------------------------------------


def _tiny_bpe(pre: str | None, **extra: Any) -> dict[str, Any]:
    from rocmforge.tokenizer import _bytes_to_unicode

    chars = list(_bytes_to_unicode().values())
    md: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": [*chars, "ab", "abc", "<|end|>"],
        "tokenizer.ggml.token_type": [1] * 258 + [3],
        "tokenizer.ggml.merges": ["a b"],
        **extra,
    }
    if pre is not None:
        md["tokenizer.ggml.pre"] = pre
    return md


def test_unknown_pre_raises():
    with pytest.raises(ValueError, match="not-a-pre"):
        Tokenizer(_tiny_bpe("not-a-pre"))


def test_missing_pre_warns_and_uses_default():
    with pytest.warns(UserWarning, match="default"):
        tok = Tokenizer(_tiny_bpe(None))
    assert tok.pre == "default"


def test_required_pre_tokenizers_supported():
    for pre in ("smollm", "qwen2", "llama-bpe", "gpt-2", "gpt2", "default"):
        assert pre in SUPPORTED_PRE
        Tokenizer(_tiny_bpe(pre))


def test_ignore_merges_llama3():
    # "abc" is a token that the merges cannot reach: llama-bpe (ignore_merges) emits it whole
    ab, abc = 256, 257
    gpt2 = Tokenizer(_tiny_bpe("gpt-2"))
    assert gpt2.encode("abc") == [ab, gpt2.token_to_id("c")]
    llama3 = Tokenizer(_tiny_bpe("llama-bpe"))
    assert llama3.encode("abc", add_bos=False) == [abc]
    assert llama3.encode("ab", add_bos=False) == [ab]
    assert llama3.add_bos and llama3.encode("ab")[0] == llama3.bos_id  # llama.cpp's default for llama3


def test_metadata_arrays_may_be_numpy_or_lists():
    md = _tiny_bpe("gpt-2")
    md2 = dict(md, **{"tokenizer.ggml.token_type": np.array(md["tokenizer.ggml.token_type"], dtype=np.int32),
                      "tokenizer.ggml.tokens": np.array(md["tokenizer.ggml.tokens"], dtype=object)})
    assert Tokenizer(md).encode("abc<|end|>") == Tokenizer(md2).encode("abc<|end|>")


def test_from_gguf_needs_metadata():
    with pytest.raises(TypeError):
        Tokenizer.from_gguf(object())

    class F:
        metadata = _tiny_bpe("gpt-2")

    assert Tokenizer.from_gguf(F()).n_vocab == 259


def test_no_chat_template_is_a_clear_error():
    tok = Tokenizer(_tiny_bpe("gpt-2"))
    with pytest.raises(ValueError, match="chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_chat_template_sandbox_and_raise_exception():
    tmpl = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
            "{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}")
    md = _tiny_bpe("gpt-2", **{"tokenizer.chat_template": tmpl, "tokenizer.ggml.bos_token_id": 258})
    tok = Tokenizer(md)
    assert tok.apply_chat_template([{"role": "user", "content": "é"}]) == '<|end|>"é"'
    import jinja2

    with pytest.raises(jinja2.TemplateError, match="user first"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])
