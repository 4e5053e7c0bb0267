"""CLIP's tokenizer files (``vocab.json``, ``merges.txt``) derived from its BPE merge list, as CLIP does.

    python tests/data/make_clip_tokenizer.py OUT_DIR   # then CLIPTokenizer.from_pretrained(OUT_DIR)

``bpe_simple_vocab_16e6.txt.gz`` beside this file is CLIP's merge list (OpenAI CLIP, MIT license),
as shipped in the open-clip-torch wheel (``open_clip/bpe_simple_vocab_16e6.txt.gz``, 3.3.0).
CLIP's ``SimpleTokenizer`` builds its vocabulary from it: the 256 byte symbols, the same with
``</w>`` (end of word), one token per merge (the first 49152 - 256 - 2 lines after the header),
then ``<|startoftext|>`` and ``<|endoftext|>``: 49408 tokens, the ids of
``openai/clip-vit-large-patch14``'s tokenizer, which Lesson 5e uses.
"""

import gzip
import json
import os
import sys
from typing import Dict, List, Tuple


BPE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def bytes_to_unicode() -> Dict[int, str]:
    """Each byte -> a printable character: printable Latin-1 bytes map to themselves, the rest to 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    # Insertion order is the vocabulary's order: printable bytes first, then the others.
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def read_merges(bpe_file: str = BPE_FILE) -> List[Tuple[str, str]]:
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header


def clip_vocab(merges: List[Tuple[str, str]]) -> Dict[str, int]:
    symbols = list(bytes_to_unicode().values())  # printable bytes first, in SimpleTokenizer's order
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    return {token: i for i, token in enumerate(tokens)}


def write_clip_tokenizer_files(out_dir: str, bpe_file: str = BPE_FILE) -> str:
    merges = read_merges(bpe_file)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(clip_vocab(merges), f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(write_clip_tokenizer_files(sys.argv[1]))
