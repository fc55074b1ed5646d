"""Write a GGUF file's layout (metadata and tensor list, no matrices: synth.read_layout) to a small
lzma-pickled file, so that a machine without the model can write a copy with random weights
(synth.write_layout): the real models' exact shapes for timing, in a few hundred KB instead of 100-500 MB.
Usage: python scripts/dump_layout.py MODEL OUT.layout.xz   (MODEL: a known model name or a GGUF path)
Read back with: synth.write_layout(pickle.load(lzma.open(path)), "model-like.gguf")
"""

from __future__ import annotations

import lzma
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.gguf import open_model  # noqa: E402
from rocmforge.synth import read_layout  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open_model(sys.argv[1]) as f:
        path = f.path
    with lzma.open(sys.argv[2], "wb") as out:
        pickle.dump(read_layout(path), out)
    print(f"{sys.argv[2]}: {Path(sys.argv[2]).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
