"""The lesson's real tokenizer (CLIP ViT-L/14's BPE), offline, and the whole chain from a CLIP-width encoder.

Lesson 5e encodes prompts with ``CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")``
(padding to 77, truncation, no attention mask). Its vocabulary and merges are derived here from
CLIP's own merge list (tests/data/, see make_clip_tokenizer.py); the ids transformers gives are
checked against a BPE encoder written from CLIP's ``SimpleTokenizer`` below.
"""

import html
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import regex
import torch
from compact_sampling import SIZE_LIMIT, folder_size, full_encoder_rounding, sample_in_fresh_process
from conftest import perturbed_reference, run_converter, save_lesson_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipeline_mnist_ddim.conversion.prompt_table import LESSON_PROMPTS
from pipeline_mnist_ddim.tools.commands import convert as convert_command


pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parent / "data"
START, END = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
CLIP_WORDS = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def load_make_script():
    spec = importlib.util.spec_from_file_location("make_clip_tokenizer", DATA / "make_clip_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SimpleTokenizerEncoder:
    """CLIP's SimpleTokenizer encode (without ftfy), written out: lowercase, split into words, merge
    byte symbols by lowest merge rank, wrap in start/end, pad with the end token to 77."""

    def __init__(self, make):
        merges = make.read_merges()
        self.vocab = make.clip_vocab(merges)
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.byte_symbol = make.bytes_to_unicode()

    def bpe(self, word: str):
        symbols = [self.byte_symbol[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, math.inf))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def __call__(self, text: str):
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids = [self.vocab[s] for word in CLIP_WORDS.findall(text) for s in self.bpe(word)]
        ids = [self.vocab[START]] + ids[: CONTEXT_LENGTH - 2] + [self.vocab[END]]
        return ids + [self.vocab[END]] * (CONTEXT_LENGTH - len(ids))


@pytest.fixture(scope="session")
def clip_tokenizer_folder(tmp_path_factory):
    return Path(load_make_script().write_clip_tokenizer_files(str(tmp_path_factory.mktemp("clip_tokenizer"))))


@pytest.fixture(scope="session")
def clip_tokenizer(clip_tokenizer_folder):
    return CLIPTokenizer.from_pretrained(clip_tokenizer_folder, model_max_length=CONTEXT_LENGTH)


@pytest.fixture(scope="session")
def simple_tokenizer():
    return SimpleTokenizerEncoder(load_make_script())


def lesson_ids(tokenizer, prompts):
    """Lesson 5e's call: padding to max length, truncation, no attention mask."""
    return tokenizer(prompts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True).input_ids


# ---------------------------------------------------------------- the tokenizer


def test_derived_vocabulary_has_clip_vit_l14s_size_and_special_tokens(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    special_ids = (clip_tokenizer.bos_token_id, clip_tokenizer.eos_token_id, clip_tokenizer.pad_token_id)
    assert special_ids == (49406, 49407, 49407)


def test_lesson_prompts_get_the_ids_of_clips_own_encoding(clip_tokenizer, simple_tokenizer):
    assert lesson_ids(clip_tokenizer, list(LESSON_PROMPTS)) == [simple_tokenizer(p) for p in LESSON_PROMPTS]


def test_each_lesson_prompt_is_one_clip_token_between_start_and_end(clip_tokenizer, simple_tokenizer):
    for prompt in LESSON_PROMPTS:
        ids = lesson_ids(clip_tokenizer, prompt)
        assert ids == [49406, simple_tokenizer.vocab[prompt + "</w>"]] + [49407] * 75, prompt
    words = {lesson_ids(clip_tokenizer, p)[1] for p in LESSON_PROMPTS}
    assert len(words) == 20  # twenty different tokens


def test_clip_ignores_case_and_surrounding_spaces_as_the_compact_tokenizer_does(clip_tokenizer):
    for prompt in LESSON_PROMPTS:
        expected = lesson_ids(clip_tokenizer, prompt)
        for variant in (prompt.upper(), prompt.title(), f"  {prompt}\t", f"\n{prompt.upper()} "):
            assert lesson_ids(clip_tokenizer, variant) == expected, repr(variant)


def test_other_text_gets_other_ids(clip_tokenizer, simple_tokenizer):
    """What CLIP would silently embed and the compact encoder refuses."""
    known = {tuple(lesson_ids(clip_tokenizer, p)) for p in LESSON_PROMPTS}
    for text in ("eleven", "seven.", "seven seven", "07", "a seven"):
        ids = lesson_ids(clip_tokenizer, text)
        assert ids == simple_tokenizer(text) and tuple(ids) not in known, text


# ---------------------------------------------------------------- the chain, at CLIP's width


@pytest.fixture(scope="module")
def clip_width_encoder_folder(clip_tokenizer, tmp_path_factory):
    """A random one-layer CLIPTextModel of CLIP-L's width (768) and vocabulary, saved with the real tokenizer."""
    config = CLIPTextConfig(
        vocab_size=len(clip_tokenizer),
        hidden_size=768,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=12,
        max_position_embeddings=CONTEXT_LENGTH,
        projection_dim=768,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPTextModel(config).eval()
    folder = tmp_path_factory.mktemp("clip_width_encoder")
    model.save_pretrained(folder)
    clip_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def full_size_folders(clip_width_encoder_folder, tmp_path_factory):
    """A full-size checkpoint (base 128, context 768) converted with that encoder, in full and compact."""
    work = tmp_path_factory.mktemp("full_size_chain")
    reference = perturbed_reference(base_channels=128, context_dim=768, seed=5)
    checkpoint = save_lesson_checkpoint(reference, work / "gaussian_diffusion_ddpm-10000.pt")
    script = convert_command
    encoder = ["--text_encoder", str(clip_width_encoder_folder)]
    full = run_converter(script, checkpoint, work / "full", *encoder)
    compact = run_converter(script, checkpoint, work / "compact", *encoder, "--compact_text_encoder")
    return full, compact, work


@pytest.mark.slow
def test_full_size_chain_with_the_clip_tokenizer_samples_the_prompts_without_the_package(full_size_folders):
    full, compact, work = full_size_folders
    full_images, full_report = sample_in_fresh_process(full, work)
    assert full_images.shape == (20, 32, 32, 1) and np.isfinite(full_images).all()
    assert full_report["text_encoder"].startswith("transformers")
    assert full_report["refusal"] is None  # CLIP embeds "eleven" silently, into a context the model never saw
    assert json.loads((full / "model_index.json").read_text())["text_encoder"] == ["transformers", "CLIPTextModel"]
    compact_images, compact_report = sample_in_fresh_process(compact, work)
    # Within the call's own float32 rounding, not bit for bit: see test_compact_text_encoder.py.
    assert np.abs(compact_images - full_images).max() <= 4 * full_encoder_rounding(full)
    assert all(repr(prompt) in compact_report["refusal"] for prompt in LESSON_PROMPTS)


@pytest.mark.slow
def test_full_size_compact_folder_is_under_5_mb_where_the_encoder_is_not(full_size_folders):
    full, compact, _ = full_size_folders
    compact_size = folder_size(compact / "text_encoder") + folder_size(compact / "tokenizer")
    assert compact_size <= SIZE_LIMIT < folder_size(full / "text_encoder")
