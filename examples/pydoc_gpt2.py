"""Build (once) a second checkpoint that shares SmolLM2's tokenizer: a small GPT-2 trained on pydoc.

    python examples/pydoc_gpt2.py          # builds it the first time (~2 minutes of CPU), prints its path

Ensembling needs models that map tokens to the same ids. This script trains one from scratch:
a 2-layer GPT-2 (96-dim, ~10M parameters, nearly all of them the two embedding matrices) that
reads and writes SmolLM2's 49,152-token vocabulary, trained for a couple of minutes on the help
topics that ship with every CPython (``pydoc_data.topics``, ~110k SmolLM2 tokens). It is a weak,
domain-specific language model: the *amateur* of contrastive decoding, or a small "Python
documentation" expert to add to SmolLM2's evidence.

Only ~5,000 of the 49,152 tokens occur in that text. A full softmax over all of them would spend
90% of the training compute pushing down logits of tokens it never sees, so training uses the
softmax over the tokens that occur, and the others get one fixed, very low logit afterwards. GPT-2's
LM head has no bias, so the model gets one: the final layer norm pins the last hidden dimension to
the constant 1 (weight 0, bias 1), which makes the last column of the (untied) LM head a per-token
bias. It is still a plain ``GPT2LMHeadModel``.

Its LM head is padded to 49,216 columns (a multiple of 64, like GPT-2's 50,304 for 50,257
tokens) while SmolLM2's has 49,152: the ensemble cuts both to the tokenizer's range.

The checkpoint is saved with ``save_pretrained`` (model and SmolLM2's tokenizer) under the
library's cache root (``$LOGIT_PROCESSORS_CACHE``, default ``~/.cache/logit_processors``), in a
directory named by a hash of the recipe, the library versions and the tokenizer; it is written
to a temporary directory and renamed into place, so concurrent builders never see half a
checkpoint. Other scripts import :func:`load_pydoc_gpt2` from here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from logit_processors.testing import corpus, default_cache_dir, padded_width

RECIPE = {
    "version": 2,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 96,
    "n_positions": 1024,
    "seed": 0,
    "train_steps": 400,
    "batch_size": 8,
    "seq_len": 128,
    "learning_rate": 3e-3,
}
MARKER = "pydoc_gpt2_build.json"


def smollm2_tokenizer():
    """SmolLM2's tokenizer, offline, from the converted embedded model (no model weights loaded)."""
    from transformers import AutoTokenizer

    from logit_processors.models import ensure_converted

    tokenizer = AutoTokenizer.from_pretrained(ensure_converted("smollm2", progress=False))
    tokenizer.padding_side = "left"
    return tokenizer


def _key(tokenizer) -> str:
    import transformers

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = {
        "recipe": RECIPE,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build(path: Path, tokenizer) -> None:
    """Train the model and ``save_pretrained`` it (with the tokenizer) into ``path``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    r = RECIPE
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # SmolLM2's document separator
    config = GPT2Config(
        vocab_size=padded_width(len(tokenizer)),
        n_layer=r["n_layer"], n_head=r["n_head"], n_embd=r["n_embd"], n_positions=r["n_positions"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: a few hundred steps only
        tie_word_embeddings=False,  # the LM head carries a bias column that the input embedding must not
    )
    ids: list[int] = []
    for text in corpus():
        ids += tokenizer(text)["input_ids"] + [eos]
    ids = torch.tensor(ids)
    seen = torch.unique(ids)  # the tokens that occur: the training softmax runs over these only
    target_index = torch.full((config.vocab_size,), -1)
    target_index[seen] = torch.arange(len(seen))

    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)  # no OpenMP spin-waiting against other processes on a small machine
        try:
            torch.manual_seed(r["seed"])
            model = GPT2LMHeadModel(config)
            _pin_bias_feature(model)
            generator = torch.Generator().manual_seed(r["seed"])
            optimizer = torch.optim.AdamW(model.parameters(), lr=r["learning_rate"], betas=(0.9, 0.95), weight_decay=0.0)
            steps, warmup = r["train_steps"], max(1, r["train_steps"] // 10)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps)))
            )
            window = torch.arange(r["seq_len"] + 1)
            model.train()
            for step in range(steps):
                starts = torch.randint(0, len(ids) - len(window), (r["batch_size"],), generator=generator)
                tokens = ids[starts[:, None] + window]
                hidden = model.transformer(input_ids=tokens[:, :-1]).last_hidden_state
                logits = hidden @ model.lm_head.weight[seen].T
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_index[tokens[:, 1:]].flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                _pin_bias_feature(model)
                if step % 100 == 0 or step == steps - 1:
                    print(f"  step {step:3d}/{steps}  loss {loss.item():.2f}", file=sys.stderr, flush=True)
            model.eval()
            with torch.no_grad():
                # Tokens never seen: a logit 25 below the lowest top logit on a sample of the text.
                sample = ids[torch.randint(0, len(ids) - len(window), (16,), generator=generator)[:, None] + window]
                hidden = model.transformer(input_ids=sample).last_hidden_state
                floor = float((hidden @ model.lm_head.weight[seen].T).amax(dim=-1).min()) - 25.0
                unseen = torch.ones(config.vocab_size, dtype=torch.bool)
                unseen[seen] = False
                model.lm_head.weight[unseen] = 0.0
                model.lm_head.weight[unseen, -1] = floor
                full_loss = torch.nn.functional.cross_entropy(
                    model(sample[:, :-1]).logits.flatten(0, 1), sample[:, 1:].flatten()
                ).item()
        finally:
            torch.set_num_threads(threads)
    print(f"  held-in loss over the full vocabulary: {full_loss:.2f}", file=sys.stderr)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / MARKER).write_text(json.dumps({**RECIPE, "loss": round(full_loss, 4)}, indent=2) + "\n")


def _pin_bias_feature(model) -> None:
    """The final layer norm outputs the constant 1 in its last dimension: a bias for the LM head."""
    with torch.no_grad():
        model.transformer.ln_f.weight[-1] = 0.0
        model.transformer.ln_f.bias[-1] = 1.0


def pydoc_gpt2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached checkpoint directory, built first if needed."""
    tokenizer = smollm2_tokenizer()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"pydoc-gpt2-smollm2-{_key(tokenizer)}"
    if (final / MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pydoc-gpt2-building-", dir=root))
    print(f"building {final.name} (once; about 2 minutes on a laptop CPU) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        build(staging, tokenizer)
        try:
            os.rename(staging, final)  # atomic on one filesystem
        except OSError:
            if not (final / MARKER).is_file():
                raise  # not a concurrent builder that finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return final


def load_pydoc_gpt2(cache_dir: str | os.PathLike | None = None):
    """``(model, tokenizer)``: the pydoc GPT-2 and SmolLM2's tokenizer, in eval mode."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = pydoc_gpt2_path(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return GPT2LMHeadModel.from_pretrained(path).eval(), tokenizer


if __name__ == "__main__":
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    path = pydoc_gpt2_path()
    print(path)
    print(json.loads((path / MARKER).read_text()))
