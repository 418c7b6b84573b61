"""A tiny GPT-2 built offline in seconds, for tests, docstring examples and notebooks.

Nothing is downloaded. The tokenizer is a byte-level BPE (the same scheme as GPT-2's) trained
with the ``tokenizers`` library on text that ships with every CPython: the help topics in
``pydoc_data.topics``. The model is a 2-layer ``GPT2LMHeadModel`` trained for a few seconds on
that text, so that greedy decoding produces varied tokens rather than one token repeated: a
processor's effect on ``generate()`` is then visible and testable.

Like real GPT-2 (50,257 tokens, 50,304 LM-head columns), the LM head is *wider* than the
tokenizer: the extra columns are not tokens, and processors must cope with them.

The checkpoint is saved with ``save_pretrained`` and loaded back with ``from_pretrained``, so
callers exercise the same code path as with a real model. Built checkpoints are cached under
``$LOGIT_PROCESSORS_CACHE`` (default ``~/.cache/logit_processors``) in a directory named by a hash
of the build parameters and library versions; a build writes to a temporary directory and renames
it into place, so concurrent builders never see a half-written checkpoint.

Example:
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> len(tokenizer), model.config.vocab_size          # the LM head is wider than the tokenizer
    (2000, 2048)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .conversion import cache_root

# Bump when the build recipe changes, so that cached checkpoints are rebuilt.
BUILDER_VERSION = 1

SPECIAL_TOKEN = "<|endoftext|>"

#: The default build: ~2,000 BPE tokens, LM head padded to a multiple of 64 (2,048 columns).
DEFAULTS: dict[str, int | float] = {
    "vocab_size": 2000,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 64,
    "n_positions": 256,
    "seed": 0,
    "train_steps": 200,
    "batch_size": 16,
    "seq_len": 128,
    "learning_rate": 5e-3,
}


def corpus() -> list[str]:
    """The training text: CPython's pydoc help topics (~460 KB), in a fixed (sorted) order.

    The topics are hard-wrapped at ~70 columns; a line break inside a prose paragraph is
    replaced by a space (indented code blocks and blank lines are kept). Otherwise "\\n" is
    one token in ten and a briefly trained model predicts little else.
    """
    from pydoc_data.topics import topics

    return [re.sub(r"(?<=\S)\n(?=\S)", " ", topics[key]) for key in sorted(topics)]


def padded_width(n_tokens: int, multiple: int = 64) -> int:
    """LM-head width: ``n_tokens`` rounded up to a multiple, always strictly wider than ``n_tokens``."""
    width = math.ceil(n_tokens / multiple) * multiple
    return width if width > n_tokens else width + multiple


def train_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on :func:`corpus`, wrapped for ``transformers``.

    ``<|endoftext|>`` (id 0) is the EOS, BOS, pad and unknown token; padding is on the left,
    as decoder-only batched generation needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=SPECIAL_TOKEN,
        bos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        padding_side="left",
    )


def training_ids(tokenizer) -> torch.Tensor:
    """The whole corpus as one id stream, documents separated by EOS."""
    ids: list[int] = []
    for text in corpus():
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def build_tiny_gpt2(path: str | os.PathLike, **params) -> Path:
    """Train the tokenizer and model and ``save_pretrained`` both into ``path``; returns ``path``.

    ``params`` override :data:`DEFAULTS` (unknown names are a ValueError). Training runs on one
    thread and takes about 15 s of CPU time. The global torch RNG and thread count are restored.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    p = _params(params)
    path = Path(path)
    tokenizer = train_tokenizer(p["vocab_size"])
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=padded_width(len(tokenizer)),
        n_layer=p["n_layer"],
        n_head=p["n_head"],
        n_embd=p["n_embd"],
        n_positions=p["n_positions"],
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        # No dropout: it only slows down a model trained for a few hundred steps.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return train_and_save(GPT2LMHeadModel, config, tokenizer, p, path, "tiny_gpt2_build.json")


def train_and_save(model_class, config, tokenizer, p: dict, path: str | os.PathLike, marker: str) -> Path:
    """Build ``model_class(config)`` from seed ``p["seed"]``, train it on :func:`corpus` (one thread;
    the global torch RNG and thread count are restored), and ``save_pretrained`` it with
    ``tokenizer`` into ``path``, the build parameters last, in ``marker``."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        # One thread: the same reduction order on every machine (a reproducible build), and
        # no OpenMP spin-waiting when other processes share the cores (10x slower with 2).
        torch.set_num_threads(1)
        try:
            torch.manual_seed(p["seed"])
            model = model_class(config)
            train_causal_lm(model, training_ids(tokenizer), p)
        finally:
            torch.set_num_threads(threads)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / marker).write_text(json.dumps(p, indent=2, sort_keys=True) + "\n")
    return path


def train_causal_lm(model, ids: torch.Tensor, p: dict) -> None:
    """A few hundred AdamW steps on random windows of the corpus (warmup, then cosine decay)."""
    steps, batch_size, seq_len = p["train_steps"], p["batch_size"], p["seq_len"]
    if steps <= 0:
        return
    warmup = max(1, steps // 10)
    generator = torch.Generator().manual_seed(p["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=p["learning_rate"], betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / steps)))
    )
    offsets = torch.arange(seq_len)
    model.loss_type = "ForCausalLM"  # the standard shifted cross-entropy, named to skip a warning
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)
        batch = ids[starts[:, None] + offsets]
        # Windows span document boundaries; EOS (= pad) inside a window is a real token here.
        attention_mask = torch.ones_like(batch)
        loss = model(input_ids=batch, attention_mask=attention_mask, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def _params(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown tiny GPT-2 parameter(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **overrides}


def default_cache_dir() -> Path:
    """The library's cache root (:func:`~logit_processors.models.conversion.cache_root`)."""
    return cache_root()


def build_key(**params) -> str:
    """Short hash of the build parameters, the recipe version and the library versions."""
    import tokenizers
    import transformers

    key = {
        "params": _params(params),
        "builder": BUILDER_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def tiny_gpt2_path(cache_dir: str | os.PathLike | None = None, **params) -> Path:
    """The cached checkpoint directory for these parameters, building it first if needed."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cached_build(root / f"tiny-gpt2-{build_key(**params)}", lambda path: build_tiny_gpt2(path, **params))


def cached_build(final: Path, build, marker: str = "tiny_gpt2_build.json") -> Path:
    """``final``, built by ``build(staging directory)`` unless it holds ``marker`` already. The
    build writes to a temporary directory renamed into place, so concurrent builders never see
    a half-written checkpoint."""
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-building-", dir=final.parent))
    try:
        build(staging)
        try:
            os.rename(staging, final)  # atomic on one filesystem
        except OSError:
            if not (final / marker).is_file():
                raise
            # Another process finished the same build first; theirs is identical in recipe.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_tiny_gpt2(cache_dir: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None, **params):
    """``(model, tokenizer)`` loaded with ``from_pretrained``, in eval mode.

    From ``path`` if given (a directory written by :func:`build_tiny_gpt2`), else from the
    cached build for ``params`` under ``cache_dir`` (built first if needed).
    """
    from transformers import GPT2LMHeadModel

    if path is None:
        path = tiny_gpt2_path(cache_dir, **params)
    elif params:
        raise ValueError(f"pass either path= or build parameters, not both; got path={path!r} and {sorted(params)}")
    return load_saved(GPT2LMHeadModel, path)


def load_saved(model_class, path: str | os.PathLike):
    """``(model, tokenizer)`` saved in ``path``: eval mode, left padding, the pad token set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = model_class.from_pretrained(path)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
