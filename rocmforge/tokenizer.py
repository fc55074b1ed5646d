"""Tokenizer built from GGUF metadata with the HuggingFace `tokenizers` library.

The goal is id-for-id agreement with llama.cpp (src/llama-vocab.cpp) on the same GGUF file:

- byte-level BPE (`tokenizer.ggml.model == "gpt2"`): the pre-tokenizer regexes are the ones llama.cpp
  applies for `tokenizer.ggml.pre`, run in sequence as isolated splits, then GPT-2 byte mapping and BPE
  with the GGUF merges (`ignore_merges` where llama.cpp sets it);
- SentencePiece vocabularies (`"llama"`): BPE whose merges are derived from the token scores (llama.cpp
  merges the adjacent pair whose concatenation is the highest-scoring token), '▁' for spaces, a
  prefix space before every text fragment, byte fallback to <0xXX> tokens.

Special tokens are added tokens: CONTROL/UNKNOWN ones are matched only when `parse_special` is set,
USER_DEFINED ones always, as llama.cpp's tokenizer_st_partition does. BOS/EOS defaults, the EOT/FIM/EOG
tokens llama.cpp finds by their text (and marks CONTROL), and its pick among several EOT candidates (the
first in libstdc++'s hash-map order) are reproduced. Decoding follows llama.cpp's token_to_piece, without
the clean-up pass of llama_detokenize, so decode(encode(s)) == s. The file itself is never opened here:
`Tokenizer.from_gguf` takes any object with a `.metadata` dict of decoded values (rocmforge.gguf.GGUFFile).
"""

from __future__ import annotations

import codecs
import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

__all__ = ["Tokenizer", "StreamDecoder", "TokenType", "SUPPORTED_PRE"]


class TokenType:
    """Values of `tokenizer.ggml.token_type` (gguf / llama.cpp LLAMA_TOKEN_TYPE_*)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# llama.cpp token attribute bits (LLAMA_TOKEN_ATTR_*)
_A_UNKNOWN = 1 << 0
_A_UNUSED = 1 << 1
_A_NORMAL = 1 << 2
_A_CONTROL = 1 << 3
_A_USER_DEFINED = 1 << 4
_A_BYTE = 1 << 5
_TYPE_TO_ATTR = {
    TokenType.UNKNOWN: _A_UNKNOWN,
    TokenType.UNUSED: _A_UNUSED,
    TokenType.NORMAL: _A_NORMAL,
    TokenType.CONTROL: _A_CONTROL,
    TokenType.USER_DEFINED: _A_USER_DEFINED,
    TokenType.BYTE: _A_BYTE,
}

# --- pre-tokenizer regexes (llama-vocab.cpp, llm_tokenizer_bpe) ----------------------------------------
# llama.cpp spells the case-insensitive contractions as explicit classes; (?i:) would also fold e.g. 'ſ'.
_CONTR = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
# GPT-2; llama.cpp's custom splitter also falls back to \s+ where the string omits it
_RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_RE_LLAMA3 = (_CONTR + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
_RE_QWEN2 = (_CONTR + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
_RE_QWEN35 = (_CONTR + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# gpt-4o / tekken: llama.cpp's adaptation (\p{Lu}.. -> letters that are not a-z / not A-Z)
_RE_GPT4O = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+" + _CONTR + "?"
             r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*" + _CONTR + "?"
             r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_TEKKEN = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
              r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
              r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_RE_SEED_CODER = (_CONTR + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                  r"|\s+(?!\S)|\s+")
_RE_UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_RE_MINICPM5 = (_CONTR + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class _Pre:
    regexes: tuple[str, ...]  # applied in order, each splitting the pieces of the previous one
    ignore_merges: bool = False  # a word that is a whole token is emitted as is (llama3)
    add_bos: bool = False  # llama.cpp's default before tokenizer.ggml.add_bos_token
    no_bos: bool = False  # llama.cpp drops the BOS id (chatglm)


_DEFAULT = _Pre((r"[\p{P}\$\+<=>\^~\|]+", _RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_GPT2 = _Pre((_RE_GPT2,))
_STARCODER = _Pre((r"\p{N}", _RE_GPT2))  # digits split one by one before the GPT-2 regex
_QWEN2 = _Pre((_RE_QWEN2,))
_LLAMA3 = _Pre((_RE_LLAMA3,), ignore_merges=True, add_bos=True)


def _names(names: str, pre: _Pre) -> dict[str, _Pre]:
    return dict.fromkeys(names.split(), pre)


# tokenizer.ggml.pre -> settings, as llama_vocab::impl::load maps the names
_PRE: dict[str, _Pre] = {
    "default": _DEFAULT,
    # "gpt2" is not a llama.cpp name ("gpt-2" is); accepted as an alias
    **_names("gpt-2 gpt2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert "
             "jina-v1-en jina-v2-code roberta-bpe mpt olmo jais exaone4 trillion granite-docling", _GPT2),
    **_names("starcoder refact command-r smollm codeshell exaone minerva-7b mellum2", _STARCODER),
    **_names("qwen2 deepseek-r1-qwen kormo f2llmv2 megrez stablelm2 hunyuan solar-open grok-2", _QWEN2),
    "qwen35": _Pre((_RE_QWEN35,)),
    **_names("llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano", _LLAMA3),
    **_names("dbrx smaug-bpe", _Pre((_RE_LLAMA3,))),
    "chatglm-bpe": _Pre((_RE_LLAMA3,), no_bos=True),
    **_names("glm4 glm5", _Pre((_RE_LLAMA3,), ignore_merges=True, no_bos=True)),
    "falcon": _Pre((r"[\p{P}\$\+<=>\^~\|`]+", _RE_GPT2, r"[0-9][0-9][0-9]")),
    **_names("gpt-4o llama4 kanana2 talkie minimax-m2", _Pre((_RE_GPT4O,))),
    "tekken": _Pre((_RE_TEKKEN,), ignore_merges=True, add_bos=True),
    "seed-coder": _Pre((_RE_SEED_CODER,)),
    "ufakzeka": _Pre((_RE_UFAKZEKA,)),
    "minicpm5": _Pre((r"\p{N}{1,3}", _RE_MINICPM5), ignore_merges=True),
}
SUPPORTED_PRE: tuple[str, ...] = tuple(sorted(_PRE))

# --- special-token detection by text (llama_vocab::impl::load) -----------------------------------------
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_PRE_TEXTS = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                  "<|code_prefix|>", "<|prefix|>")
_FIM_SUF_TEXTS = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                  "<|code_suffix|>", "<|suffix|>")
_FIM_MID_TEXTS = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                  "<|code_middle|>", "<|middle|>")
_FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
_FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
_FIM_SEP_TEXTS = ("<|file_sep|>",)
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))


# --- libstdc++ std::unordered_map<std::string, int> iteration order ---------------------------------------
# llama.cpp detects EOT/FIM tokens by walking its token_to_id hash map and keeping the first match, so with
# several candidates (<|im_end|> and <|endoftext|>) the pick follows the map's order. This reproduces it for
# libstdc++ (Linux builds; checked against g++ 12): std::hash is MurmurHash64A-like _Hash_bytes, buckets
# grow along the prime chain below, and a node goes first in its bucket, a new bucket first in the list.
_HASH_MUL = np.uint64(0xC6A4A7935BD1E995)
_HASH_SEED = np.uint64(0xC70F6907)
_SHIFT = np.uint64(47)
_BUCKET_CHAIN = (13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
                 712697, 1447153, 2938679, 5967347, 12117689, 24607243)


def _std_hash(keys: Sequence[bytes]) -> np.ndarray:
    """std::_Hash_bytes(key, len, 0xc70f6907) for every key; uint64 [n]."""
    n = len(keys)
    lens = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    nblk = (lens + 7) // 8
    # zero padding to 8 bytes makes the tail load (load_bytes) a plain little-endian word
    words = np.frombuffer(b"".join([k + bytes(-len(k) % 8) for k in keys]), dtype="<u8")
    off = np.cumsum(nblk) - nblk
    nfull = lens // 8
    with np.errstate(over="ignore"):  # wrap-around arithmetic mod 2**64
        h = _HASH_SEED ^ (lens.astype(np.uint64) * _HASH_MUL)
        rows = np.flatnonzero(nblk > 0)
        j = 0
        while rows.size:
            w = words[off[rows] + j]
            d = w * _HASH_MUL
            d = (d ^ (d >> _SHIFT)) * _HASH_MUL
            h[rows] = (h[rows] ^ np.where(nfull[rows] > j, d, w)) * _HASH_MUL
            j += 1
            rows = rows[nblk[rows] > j]
        h = (h ^ (h >> _SHIFT)) * _HASH_MUL
        return h ^ (h >> _SHIFT)


def _unordered_map_rank(keys: Sequence[str]) -> np.ndarray:
    """Iteration position of each key of a libstdc++ unordered_map filled in `keys` order (keys unique)."""
    h = _std_hash([k.encode() for k in keys])
    n = len(keys)
    order = np.zeros(0, dtype=np.int64)
    start = 0
    for n_bkt in _BUCKET_CHAIN:
        # a rehash re-inserts the old list in order, then new keys follow: both put a node first in its
        # bucket and a newly used bucket first in the list -> order by (bucket's first use, position), latest
        # first
        end = min(n, n_bkt)
        seq = np.concatenate([order, np.arange(start, end)])
        bkt = (h[seq] % np.uint64(n_bkt)).astype(np.int64)
        first_use = np.zeros(n_bkt, dtype=np.int64)
        used, first = np.unique(bkt, return_index=True)  # earliest position per bucket
        first_use[used] = first
        order = seq[np.argsort(-(first_use[bkt] * (seq.size + 1) + np.arange(seq.size)), kind="stable")]
        start = end
        if end == n:
            break
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (unicode_byte_to_utf8_map)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def _as_list(value: Any) -> list:
    # metadata arrays may come as lists or numpy arrays
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _spm_merges(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to llama.cpp's SPM bigram search.

    llama.cpp merges the adjacent symbols whose concatenation is the highest-scoring vocab token, so every
    split (a, b) of a token t with a and b in the vocab is a merge, ranked by t's score (ties: lower id).
    """
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab[t] = i  # duplicates: the last id wins, as in llama.cpp's token_to_id
    ranked = []
    for t, i in vocab.items():
        if len(t) < 2:
            continue
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in vocab and b in vocab:
                ranked.append((-float(scores[i]), i, vocab[a], a, b))
    ranked.sort()
    return [(a, b) for *_, a, b in ranked]


class Tokenizer:
    """llama.cpp-compatible tokenizer over GGUF tokenizer metadata (see module docstring)."""

    def __init__(self, metadata: Mapping[str, Any]):
        md = metadata
        if "tokenizer.ggml.tokens" not in md:
            raise ValueError("GGUF metadata has no tokenizer.ggml.tokens: the model carries no vocabulary")
        self._model = _as_str(md.get("tokenizer.ggml.model", "llama"))
        if self._model not in ("gpt2", "llama"):
            raise ValueError(f"unsupported tokenizer.ggml.model {self._model!r} (supported: 'gpt2', 'llama')")
        tokens = _as_list(md["tokenizer.ggml.tokens"])
        if not all(type(t) is str for t in tokens):
            tokens = [_as_str(t) for t in tokens]
        n = len(tokens)
        for i, t in enumerate(tokens):
            if not t:
                tokens[i] = f"[EMPTY_{i}]"  # llama.cpp renames empty tokens
        self._tokens = tokens
        types = md.get("tokenizer.ggml.token_type")
        types = [int(x) for x in _as_list(types)] if types is not None else [TokenType.NORMAL] * n
        scores = md.get("tokenizer.ggml.scores")
        self._scores = [float(x) for x in _as_list(scores)] if scores is not None else [0.0] * n
        self._attr = [_TYPE_TO_ATTR.get(t, 0) for t in types]
        self._token_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            self._token_to_id[t] = i

        # llama.cpp defaults per vocabulary type, then the metadata
        if self._model == "gpt2":
            pre_name = _as_str(md.get("tokenizer.ggml.pre", "") or "")
            if not pre_name:
                warnings.warn("GGUF has no tokenizer.ggml.pre; using 'default' as llama.cpp does "
                              "(generation quality may suffer)", stacklevel=2)
                pre_name = "default"
            if pre_name not in _PRE:
                raise ValueError(f"unknown pre-tokenizer type (tokenizer.ggml.pre): {pre_name!r}; "
                                 f"supported: {', '.join(SUPPORTED_PRE)}")
            self._pre = pre_name
            pre = _PRE[pre_name]
            bos, eos, unk = 11, 11, None
            add_bos, add_space_prefix = pre.add_bos, False
        else:
            self._pre = "default"
            pre = None
            bos, eos, unk = 1, 2, 0
            add_bos, add_space_prefix = True, True
        add_eos = False
        add_space_prefix = bool(md.get("tokenizer.ggml.add_space_prefix", add_space_prefix))
        bos = None if pre is not None and pre.no_bos else bos

        def _id(key: str, default: int | None) -> int | None:
            default = default if default is not None and 0 <= default < n else None
            if key not in md:
                return default
            v = int(md[key])
            return v if 0 <= v < n else default

        self._bos = _id("tokenizer.ggml.bos_token_id", bos)
        self._eos = _id("tokenizer.ggml.eos_token_id", eos)
        self._unk = _id("tokenizer.ggml.unknown_token_id", unk)
        self._pad = _id("tokenizer.ggml.padding_token_id", None)
        self._add_bos = bool(md.get("tokenizer.ggml.add_bos_token", add_bos))
        self._add_eos = bool(md.get("tokenizer.ggml.add_eos_token", add_eos))
        self._add_space_prefix = add_space_prefix

        # auto-detect special tokens by their text and mark them CONTROL, as llama.cpp does; with several
        # candidates llama.cpp keeps the first in its hash map's order (resolved lazily for EOT)
        self._rank: np.ndarray | None = None
        self._key_index: dict[str, int] | None = None

        def _pick(keys: tuple[str, ...], texts: tuple[str, ...]) -> int | None:
            for key in keys:
                if _id(key, None) is not None:
                    return _id(key, None)
            found = [self._token_to_id[t] for t in texts if t in self._token_to_id]
            if not found:
                return None
            i = found[0] if len(found) == 1 else self._first_in_map_order(found)
            self._attr[i] |= _A_CONTROL
            return i

        self._eot: int | None = _id("tokenizer.ggml.eot_token_id", None)
        self._eot_candidates = [self._token_to_id[t] for t in _EOT_TEXTS if t in self._token_to_id]
        for i in self._eot_candidates:  # all are end-of-generation texts too, so CONTROL either way
            self._attr[i] |= _A_CONTROL
        eom = _pick(("tokenizer.ggml.eom_token_id",), _EOM_TEXTS)
        _pick(("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"), _FIM_PRE_TEXTS)
        _pick(("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"), _FIM_SUF_TEXTS)
        _pick(("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"), _FIM_MID_TEXTS)
        fim_pad = _pick(("tokenizer.ggml.fim_pad_token_id",), _FIM_PAD_TEXTS)
        fim_rep = _pick(("tokenizer.ggml.fim_rep_token_id",), _FIM_REP_TEXTS)
        fim_sep = _pick(("tokenizer.ggml.fim_sep_token_id",), _FIM_SEP_TEXTS)
        for i, t in enumerate(tokens):  # control tokens named "unused" are unused
            if self._attr[i] & _A_CONTROL and "unused" in t:
                self._attr[i] |= _A_UNUSED
        eog = {i for i in (fim_pad, fim_rep, fim_sep) if i is not None}
        for t in _EOG_TEXTS:
            i = self._token_to_id.get(t)
            if i is not None:
                eog.add(i)
                self._attr[i] |= _A_CONTROL
        # every EOT candidate is an EOG text, so the set does not depend on which one is the EOT
        eog.update(i for i in (self._eos, self._eot, eom) if i is not None)
        texts = {tokens[i]: i for i in eog}
        if "<|end|>" in texts and (("<|return|>" in texts and ("<|call|>" in texts or "<|calls|>" in texts))
                                   or ("<|calls|>" in texts and "<|flush|>" in texts)):
            eog.discard(texts["<|end|>"])  # harmony / solar-open: <|end|> ends a message, not generation
            self._attr[texts["<|end|>"]] = _A_USER_DEFINED
        if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
            eog.discard(texts["</s>"])
            self._attr[texts["</s>"]] = _A_NORMAL
        self._eog = frozenset(eog)

        self._hf = self._build_hf(pre, md)
        self._piece_cache: dict[int, bytes] = {}
        self._template_cache: tuple[str, Any] | None = None
        self._chat_template = md.get("tokenizer.chat_template")

    # --- construction -------------------------------------------------------------------------------

    def _build_hf(self, pre: _Pre | None, md: Mapping[str, Any]) -> HFTokenizer:
        vocab = self._token_to_id
        if pre is not None:
            merges = []
            for m in _as_list(md.get("tokenizer.ggml.merges", [])):
                m = m if type(m) is str else _as_str(m)
                p = m.find(" ", 1)  # llama.cpp splits at the first space after the first character
                if p < 0:
                    continue
                a, b = m[:p], m[p + 1:]
                # tokenizers rejects merges outside the vocab (llama.cpp would merge, then fall back to bytes)
                if a in vocab and b in vocab and a + b in vocab:
                    merges.append((a, b))
            hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre.ignore_merges))
            splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
            hf.pre_tokenizer = pre_tokenizers.Sequence(
                [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            hf.decoder = decoders.ByteLevel()
        else:
            unk = self._tokens[self._unk] if self._unk is not None else None
            bpe = models.BPE(vocab=vocab, merges=_spm_merges(self._tokens, self._scores), unk_token=unk,
                             byte_fallback=True, fuse_unk=False)
            hf = HFTokenizer(bpe)
            # llama.cpp adds the prefix space to every text fragment (after each special token too),
            # which is how tokenizers normalizes the pieces between added tokens
            norm = [normalizers.Replace(" ", "▁")]
            if self._add_space_prefix:
                norm.insert(0, normalizers.Prepend("▁"))
            hf.normalizer = normalizers.Sequence(norm)
            dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
            if self._add_space_prefix:
                dec.append(decoders.Strip(" ", 1, 0))
            hf.decoder = decoders.Sequence(dec)
        # special tokens: CONTROL/UNKNOWN are "special" (skipped when parse_special is off),
        # USER_DEFINED always match; llama.cpp matches the raw text, never normalized
        added = []
        for i, t in enumerate(self._tokens):
            a = self._attr[i]
            if a & (_A_CONTROL | _A_UNKNOWN | _A_USER_DEFINED) and self._token_to_id[t] == i:
                added.append(AddedToken(t, special=bool(a & (_A_CONTROL | _A_UNKNOWN)), normalized=False,
                                        lstrip=False, rstrip=False, single_word=False))
        if added:
            hf.add_tokens(added)
        return hf

    @classmethod
    def from_gguf(cls, f: Any) -> Tokenizer:
        """Build from an opened GGUF file (anything with a `.metadata` dict of decoded values)."""
        md = getattr(f, "metadata", None)
        if not isinstance(md, Mapping):
            raise TypeError("Tokenizer.from_gguf expects an object with a .metadata dict (GGUFFile)")
        return cls(md)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        return cls(metadata)

    # --- properties ---------------------------------------------------------------------------------

    @property
    def hf(self) -> HFTokenizer:
        """The underlying `tokenizers.Tokenizer` (no BOS handling; special tokens as added tokens)."""
        return self._hf

    @property
    def model(self) -> str:
        return self._model

    @property
    def pre(self) -> str:
        return self._pre

    @property
    def n_vocab(self) -> int:
        return len(self._tokens)

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def eot_id(self) -> int | None:
        """End-of-turn id: metadata, else the token llama.cpp detects by text (<|im_end|>, <|eot_id|>...)."""
        if self._eot is None and self._eot_candidates:
            c = self._eot_candidates
            self._eot = c[0] if len(c) == 1 else self._first_in_map_order(c)
        return self._eot

    @property
    def unk_id(self) -> int | None:
        return self._unk

    @property
    def pad_id(self) -> int | None:
        return self._pad

    @property
    def add_bos(self) -> bool:
        return self._add_bos

    @property
    def add_eos(self) -> bool:
        return self._add_eos

    @property
    def stop_ids(self) -> frozenset[int]:
        """End-of-generation ids (llama.cpp's special_eog_ids: eos, eot, eom, <|im_end|>, fim pad...)."""
        return self._eog

    @property
    def chat_template(self) -> str | None:
        return None if self._chat_template is None else _as_str(self._chat_template)

    def _first_in_map_order(self, ids: list[int]) -> int:
        """The id llama.cpp meets first when iterating its token_to_id map (libstdc++ order)."""
        if self._rank is None:
            keys = list(dict.fromkeys(self._tokens))  # insertion order of token_to_id
            self._key_index = {k: i for i, k in enumerate(keys)}
            self._rank = _unordered_map_rank(keys)
        assert self._key_index is not None
        return min(ids, key=lambda i: int(self._rank[self._key_index[self._tokens[i]]]))

    def is_stop(self, token_id: int) -> bool:
        return token_id in self._eog

    def is_control(self, token_id: int) -> bool:
        return bool(self._attr[token_id] & (_A_CONTROL | _A_UNKNOWN))

    def id_to_token(self, token_id: int) -> str:
        """The raw vocabulary string (byte-level or '▁' encoded)."""
        return self._tokens[token_id]

    def token_to_id(self, text: str) -> int | None:
        return self._token_to_id.get(text)

    # --- encode -------------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = True) -> list[int]:
        """Token ids as llama_tokenize gives them.

        add_bos: None follows the model (llama.cpp add_special: BOS and, where the metadata asks, EOS);
        True/False forces the BOS on/off (no EOS). parse_special: match CONTROL tokens in the text.
        """
        self._hf.encode_special_tokens = not parse_special  # not thread-safe: one call at a time
        ids = self._hf.encode(text, add_special_tokens=False).ids if text else []
        bos = self._add_bos if add_bos is None else add_bos
        if bos:
            if self._bos is None:
                raise ValueError("BOS requested but the model has no BOS token")
            ids.insert(0, self._bos)
        if add_bos is None and self._add_eos and self._eos is not None:
            ids.append(self._eos)
        return ids

    def __call__(self, text: str, add_bos: bool | None = None, parse_special: bool = True) -> list[int]:
        return self.encode(text, add_bos=add_bos, parse_special=parse_special)

    # --- decode -------------------------------------------------------------------------------------

    def token_to_bytes(self, token_id: int, special: bool = True) -> bytes:
        """The bytes llama.cpp's token_to_piece gives; control tokens empty unless `special`."""
        a = self._attr[token_id]
        if a & (_A_CONTROL | _A_UNKNOWN):
            return self._tokens[token_id].encode() if special else b""
        b = self._piece_cache.get(token_id)
        if b is None:
            b = self._piece_bytes(token_id)
            self._piece_cache[token_id] = b
        return b

    def _piece_bytes(self, i: int) -> bytes:
        a, t = self._attr[i], self._tokens[i]
        if a & _A_USER_DEFINED:
            return t.encode()
        if a & _A_NORMAL:
            if self._model == "llama":
                return t.replace("▁", " ").encode()
            # byte-level: each character stands for one byte; keep unmapped characters as UTF-8
            return b"".join(bytes((_BYTE_DECODER[c],)) if c in _BYTE_DECODER else c.encode() for c in t)
        if a & _A_BYTE:
            if t.startswith("<0x") and t.endswith(">") and len(t) == 6:
                return bytes((int(t[3:5], 16),))
            return t.encode()
        return b""  # unused / undefined tokens render as nothing

    def token_to_piece(self, token_id: int, special: bool = True) -> str:
        """One token's text (a partial UTF-8 sequence shows as U+FFFD; use StreamDecoder to stream)."""
        return self.token_to_bytes(token_id, special).decode("utf-8", errors="replace")

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Concatenated token pieces (llama_detokenize without its clean-up pass, so it round-trips).

        skip_special drops CONTROL tokens (BOS, <|im_end|>...). For SentencePiece vocabularies the
        prefix space that encode adds is removed from the first token after the BOS.
        """
        ids = [int(i) for i in ids]
        out = bytearray()
        strip = self._model == "llama" and self._add_space_prefix
        for i in ids:
            piece = self.token_to_bytes(i, special=not skip_special)
            if strip and i != self._bos:  # the prefix space comes after the BOS
                if piece.startswith(b" "):
                    piece = piece[1:]
                strip = False
            out += piece
        return out.decode("utf-8", errors="replace")

    def stream(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special=skip_special)

    # --- chat template ------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """Render `tokenizer.chat_template` as transformers does (sandboxed jinja2, trim/lstrip blocks).

        Extra keyword arguments (tools, documents, ...) are passed to the template.
        """
        template = self.chat_template
        if not template:
            raise ValueError("this model has no chat template (tokenizer.chat_template is missing); "
                             "format the prompt yourself")
        if self._template_cache is None or self._template_cache[0] != template:
            self._template_cache = (template, _compile_template(template))
        variables = {
            "bos_token": self._tokens[self._bos] if self._bos is not None else "",
            "eos_token": self._tokens[self._eos] if self._eos is not None else "",
            "unk_token": self._tokens[self._unk] if self._unk is not None else "",
            "pad_token": self._tokens[self._pad] if self._pad is not None else "",
        }
        variables.update(kwargs)
        return self._template_cache[1].render(messages=messages, add_generation_prompt=add_generation_prompt,
                                              **variables)

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self._model!r}, pre={self._pre!r}, n_vocab={self.n_vocab}, "
                f"bos={self._bos}, eos={self._eos}, stop={sorted(self._eog)})")


def _compile_template(source: str) -> Any:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # transformers' tojson: no HTML escaping, unicode kept
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


class StreamDecoder:
    """Incremental detokenizer: `push(id)` returns only complete UTF-8 text, holding back partial bytes.

    Usage: `dec = tok.stream()`, then `print(dec.push(t), end="", flush=True)` per generated token and
    `print(dec.flush())` at the end.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._dec.decode(self._tok.token_to_bytes(int(token_id), special=not self._skip))

    def flush(self) -> str:
        """Text of any incomplete trailing bytes (as U+FFFD) and reset."""
        out = self._dec.decode(b"", final=True)
        self._dec.reset()
        return out
