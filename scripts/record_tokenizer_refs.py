"""Record llama.cpp's token ids for a varied list of strings, for tests/unit/test_tokenizer.py.

Run with the project venv; llama-cpp-python is imported from its own venv when it is not installed here
(same Python version, only its site-packages directory is appended to sys.path):

    .venv/bin/python scripts/record_tokenizer_refs.py [--llama-site /work/llvenv/lib/python3.11/site-packages]

For each real model (smollm2-135m, qwen2.5-0.5b), for the qwen vocabulary re-labelled with other
`tokenizer.ggml.pre` values, and for the synthetic SentencePiece vocabularies built by the test module
(each written to a temp vocab-only GGUF with gguf.GGUFWriter), it stores in data/tokenizer_refs.json:
ids with llama_tokenize(add_special=False/True, parse_special=True) and (add_special=False,
parse_special=False) for every string, BOS/EOS/EOT ids, the end-of-generation ids (llama_vocab_is_eog),
and token_to_piece(special=True) bytes for a sample of ids.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "tokenizer_refs.json"
MODELS = ["smollm2-135m", "qwen2.5-0.5b"]
DEFAULT_SITE = "/work/llvenv/lib/python3.11/site-packages"
PIECE_STRIDE = 97  # token_to_piece is recorded for every 97th id plus all special ids

PYTHON_CODE = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
    print([fib(i) for i in range(10)])  # [0, 1, 1, 2, ...]
'''

C_CODE = "int main(void) {\n\tint x = 42;\n\tif (x > 0) {\n\t\tprintf(\"%d\\n\", x);\n\t}\n\treturn 0;\n}\n"

STRINGS: list[str] = [
    # empty and whitespace only
    "", " ", "  ", "     ", "\n", "\n\n", "\n\n\n\n", "\t", "\t\t", " \t \n ", "\r\n", " \n", "\n ",
    # prose
    "Hello world",
    "Hello world!",
    " Hello world",
    "Hello world ",
    "   leading and trailing spaces   ",
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits text into pieces; the pieces are then merged, pair by pair, until none is left. "
    "It's simple, isn't it? Well... mostly (see §3.2 and footnote [1]).",
    "ALL CAPS TEXT, MiXeD cAsE, snake_case, camelCase, kebab-case, PascalCase.",
    # contractions
    "don't I'll we've they're she's I'd you're I'm",
    "DON'T I'LL WE'VE THEY'RE SHE'S I'D",
    "O'Neil's dog's bone 'quoted' \"double\" ``tick`` 'tis",
    "'s 't 're 've 'm 'll 'd ' s",
    # digits and numbers
    "1", "12", "123", "1234", "12345", "1234567", "12345678901234567890",
    "3.14159 2.71828 -42 +7 1e-10 0x1F 0b1010",
    "1,000,000 and 1.000.000 and 1 000 000",
    "2024-01-15T12:34:56Z v1.2.3 #123 $4.99 50% 3/4",
    "١٢٣ ٤٥٦ ۱۲۳ १२३ ²³ ½ Ⅻ ①②",
    "abc123def 123abc abc 123 a1b2c3",
    # unicode
    "héllo wörld ñandú ça façade",
    "naïve café résumé coöperate Ångström",
    "e\u0301 a\u0308 n\u0303 (combining accents)",
    "Ελληνικά κείμενα και αριθμοί",
    "Русский текст с пунктуацией, да!",
    "日本語のテキストです。漢字とひらがな、カタカナ。",
    "中文文本测试，包括标点符号！",
    "한국어 텍스트 테스트입니다.",
    "مرحبا بالعالم! هذا نص عربي.",
    "שלום עולם, זה טקסט בעברית.",
    "हिन्दी में पाठ, संयुक्ताक्षर क्षत्रज्ञ",
    "ภาษาไทย ไม่มีช่องว่าง",
    "🎉🚀 👍🏽 👨‍👩‍👧‍👦 ❤️ 🇫🇷 emoji!",
    "nbsp\u00a0here\u3000ideographic\u2009thin\u200bzero-width\u2028line",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 ℌ ℕ ℤ",
    "ſ 'ſ ß ẞ ﬁ ﬀ Ǆ ǅ",
    "\u0000\u0001\u001f\u007f control chars",
    "mixed English 和中文 and العربية in one line",
    # code
    PYTHON_CODE,
    C_CODE,
    "    indented four\n        indented eight\n\tindented tab\n\t\ttwo tabs\n",
    '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "ls -la | grep foo && echo $HOME > /tmp/out.txt 2>&1",
    "x+=1;y-=2;z*=3;w/=4;a==b!=c<=d>=e->f=>g::h",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "$$\\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2}$$",
    "https://example.com/path?query=1&x=y#frag user@example.com",
    # runs
    "a  b   c    d     e",
    "word\n\n\nword",
    "line one\r\nline two\r\n\r\nline four",
    "trailing newline\n",
    "trailing spaces   ",
    "   \n   \n   ",
    "!!!???...,,,;;;:::",
    "----====____****####",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ab" * 40,
    # special tokens in text
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<|im_end|><|im_end|><|im_start|>",
    " <|im_end|> ",
    "<|im_start",
    "<|im_start|",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>",
    "<reponame>repo<file_sep>a.py<filename>b.py",
    "<s>hello</s> <unk> <tool>x<tool>",
    "<0x41> <0x0A>",
]


def load_test_module() -> Any:
    """tests/unit/test_tokenizer.py holds the synthetic SentencePiece vocabulary generator."""
    path = REPO / "tests" / "unit" / "test_tokenizer.py"
    spec = importlib.util.spec_from_file_location("_tokenizer_test_module", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sha256_prefix(path: Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()[:n]


def record(llama_cpp: Any, path: Path, pieces: bool = True) -> dict[str, Any]:
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n = llama_cpp.llama_vocab_n_tokens(vocab)

    def tok(s: str, add: bool, parse: bool) -> list[int]:
        return llm.tokenize(s.encode("utf-8"), add_bos=add, special=parse)

    def opt(i: int) -> int | None:
        return None if i < 0 else int(i)

    not_plain = 0b11011  # UNKNOWN | UNUSED | CONTROL | USER_DEFINED attribute bits
    special = [i for i in range(n) if llama_cpp.llama_vocab_get_attr(vocab, i) & not_plain]
    sample = sorted(set(range(0, n, PIECE_STRIDE)) | set(special)) if pieces else []
    buf = (llama_cpp.ctypes.c_char * 256)()
    pieces_hex = []
    for i in sample:
        k = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, True)
        assert 0 <= k <= len(buf)
        pieces_hex.append(bytes(buf[:k]).hex())
    out = {
        "n_vocab": n,
        "bos": opt(llama_cpp.llama_vocab_bos(vocab)),
        "eos": opt(llama_cpp.llama_vocab_eos(vocab)),
        "eot": opt(llama_cpp.llama_vocab_eot(vocab)),
        "eog": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "ids": [tok(s, False, True) for s in STRINGS],
        "ids_add_special": [tok(s, True, True) for s in STRINGS],
        "ids_no_parse": [tok(s, False, False) for s in STRINGS],
    }
    if pieces:
        out.update(piece_ids=sample, pieces_hex=pieces_hex)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-site", default=os.environ.get("LLAMA_CPP_SITE", DEFAULT_SITE),
                    help="site-packages holding llama_cpp, appended to sys.path if needed")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.path.append(args.llama_site)
        import llama_cpp

    sys.path.insert(0, str(REPO))
    from rocmforge import hub
    from rocmforge.gguf import GGUFFile

    test_mod = load_test_module()
    out: dict[str, Any] = {"llama_cpp_python": llama_cpp.__version__, "strings": STRINGS, "models": {}}
    for name in MODELS:
        path = hub.resolve(name)
        print(f"{name}: {path}", flush=True)
        out["models"][name] = {"file": path.name, "sha256": sha256_prefix(path), **record(llama_cpp, path)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in test_mod.SPM_VARIANTS.items():
            path = Path(tmp) / f"{name}.gguf"
            md = test_mod.write_spm_gguf(path, **kwargs)
            print(f"{name}: synthetic, {len(md['tokenizer.ggml.tokens'])} tokens", flush=True)
            out["models"][name] = {"file": None, "vocab_sha256": test_mod.spm_vocab_hash(md),
                                   **record(llama_cpp, path)}
        for name, (base, pre) in test_mod.BPE_VARIANTS.items():
            path = Path(tmp) / f"{name}.gguf"
            md = test_mod.bpe_variant_metadata(GGUFFile.open(hub.resolve(base)).metadata, pre)
            test_mod.write_vocab_gguf(path, md)
            print(f"{name}: {base} vocabulary with pre {pre!r}", flush=True)
            out["models"][name] = {"file": None, "base": base, "pre": pre,
                                   **record(llama_cpp, path, pieces=False)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
