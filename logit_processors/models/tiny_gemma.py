"""A tiny Gemma-3-style model with its *own* tokenizer, built offline in seconds: the test partner
of the tiny GPT-2 (:mod:`.tiny_gpt2`) for ensembles across tokenizers.

The two share nothing but text. The tiny GPT-2 has a byte-level BPE (GPT-2's scheme); this one
has a SentencePiece-style BPE like Gemma's: spaces become ``▁``, merges run over the whole text
(tokens such as ``"):\\n"`` or ``".\\n\\nA"`` cross what GPT-2 would split), and characters outside
the vocabulary fall back to ``<0xXX>`` byte tokens. The model is a 2-layer ``Gemma3ForCausalLM``
whose first layer attends through a sliding window of 8 tokens, trained for a few seconds on
CPython's help topics (``pydoc_data.topics``), like the tiny GPT-2.

Example:
    >>> from logit_processors.models import load_tiny_gemma
    >>> model, tokenizer = load_tiny_gemma()
    >>> tokenizer.convert_ids_to_tokens(tokenizer("if x:\\n  return")["input_ids"])
    ['<bos>', 'i', 'f', '▁x', ':\\n', '▁', '▁return']
    >>> model.config.layer_types, model.config.sliding_window
    (['sliding_attention', 'full_attention'], 8)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .conversion import cache_root
from .tiny_gpt2 import cached_build, corpus, load_saved, train_and_save

BUILDER_VERSION = 1
MARKER = "tiny_gemma_build.json"
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]

DEFAULTS: dict[str, int | float] = {
    "vocab_size": 1500,
    "hidden_size": 64,
    "n_layer": 2,
    "sliding_window": 8,
    "max_position_embeddings": 512,
    "seed": 0,
    "train_steps": 150,
    "batch_size": 16,
    "seq_len": 128,
    "learning_rate": 5e-3,
}


def train_tokenizer(vocab_size: int):
    """A Gemma-style tokenizer (``▁`` for spaces, merges across words, byte fallback) trained on
    :func:`~logit_processors.models.tiny_gpt2.corpus`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    # Trained on whitespace-split words (merges within words), then used on the whole text like
    # Gemma's, so that runs of spaces and newlines merge as well.
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=["▁"])
    bpe.train_from_iterator(corpus(), trainer=trainer)
    spec = json.loads(bpe.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte fallback tokens, as SentencePiece has them
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                              "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", padding_side="left")


def build_tiny_gemma(path: str | os.PathLike, **params) -> Path:
    """Train the tokenizer and model and ``save_pretrained`` both into ``path``."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    p = _params(params)
    tokenizer = train_tokenizer(p["vocab_size"])
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=p["hidden_size"], intermediate_size=2 * p["hidden_size"],
        num_hidden_layers=p["n_layer"], num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=p["sliding_window"], layer_types=["sliding_attention", "full_attention"][: p["n_layer"]],
        max_position_embeddings=p["max_position_embeddings"], pad_token_id=0, eos_token_id=1, bos_token_id=2,
        attention_dropout=0.0, query_pre_attn_scalar=32,
    )
    return train_and_save(Gemma3ForCausalLM, config, tokenizer, p, path, MARKER)


def _params(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown tiny Gemma parameter(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **overrides}


def tiny_gemma_path(cache_dir: str | os.PathLike | None = None, **params) -> Path:
    """The cached checkpoint directory for these parameters, building it first if needed."""
    import tokenizers
    import transformers

    key = json.dumps({"params": _params(params), "builder": BUILDER_VERSION, "torch": torch.__version__,
                      "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}, sort_keys=True)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"tiny-gemma-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return cached_build(final, lambda path: build_tiny_gemma(path, **params), marker=MARKER)


def load_tiny_gemma(cache_dir: str | os.PathLike | None = None, **params):
    """``(model, tokenizer)`` of the cached build for ``params`` (built first if needed), in eval mode."""
    from transformers import Gemma3ForCausalLM

    return load_saved(Gemma3ForCausalLM, tiny_gemma_path(cache_dir, **params))
