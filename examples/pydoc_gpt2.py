"""Build (once) a second checkpoint that shares SmolLM2's tokenizer: a small GPT-2 trained on pydoc.

    python examples/pydoc_gpt2.py            # builds it the first time (~40 s of CPU), prints its path
    python examples/pydoc_gpt2.py --quick    # the 4x shorter-trained smoke-test version (~10 s)

Ensembling needs models that map tokens to the same ids. This script trains one from scratch:
a 2-layer GPT-2 (96-dim, ~10M parameters, nearly all of them the two embedding matrices) that
reads and writes SmolLM2's 49,152-token vocabulary, trained for 400 steps of 8 x 128 tokens (about
40 s of CPU) on the help topics that ship with every CPython (``pydoc_data.topics``, ~110k SmolLM2
tokens). It is a weak, domain-specific language model: the *amateur* of contrastive decoding, or a
small "Python documentation" expert to add to SmolLM2's evidence.

Only ~5,000 of the 49,152 tokens occur in that text. A full softmax over all of them would spend
90% of the training compute pushing down logits of tokens it never sees, so training runs a compact
model over the tokens that occur (their embedding rows and their softmax), whose rows are then
scattered into the full-width model; the other tokens get one fixed, very low logit. GPT-2's
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

from logit_processors.models.tiny_gpt2 import corpus, default_cache_dir, padded_width

RECIPE = {
    "version": 3,
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
#: The smoke-test version (``LOGIT_PROCESSORS_EXAMPLE_QUICK=1``): the same model, trained 4x shorter,
#: so that a CI run that starts from an empty cache builds it in seconds, not a minute.
QUICK_RECIPE = {**RECIPE, "train_steps": 100}
MARKER = "pydoc_gpt2_build.json"


def smollm2_tokenizer():
    """SmolLM2's tokenizer, offline, from the converted embedded model (no model weights loaded)."""
    from transformers import AutoTokenizer

    from logit_processors.models import ensure_converted

    tokenizer = AutoTokenizer.from_pretrained(ensure_converted("smollm2", progress=False))
    tokenizer.padding_side = "left"
    return tokenizer


def _key(tokenizer, recipe: dict) -> str:
    import transformers

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = {
        "recipe": recipe,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build(path: Path, tokenizer, recipe: dict = RECIPE) -> None:
    """Train the model and ``save_pretrained`` it (with the tokenizer) into ``path``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    r = recipe
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
    # Training runs on a compact model over the tokens that occur (their softmax, their embedding
    # rows): a full-vocabulary model would spend most of each step on 44,000 embedding and LM-head
    # rows whose gradient is zero (dense gradients, and AdamW over all of them). Afterwards the
    # compact rows are scattered into a full-width GPT2LMHeadModel.
    seen = torch.unique(ids)
    compact_ids = torch.full((config.vocab_size,), -1).index_put_((seen,), torch.arange(len(seen)))[ids]
    compact_config = GPT2Config(**{**config.to_dict(), "vocab_size": len(seen), "pad_token_id": None})

    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)  # no OpenMP spin-waiting against other processes on a small machine
        try:
            torch.manual_seed(r["seed"])
            compact = GPT2LMHeadModel(compact_config)
            _pin_bias_feature(compact)
            generator = torch.Generator().manual_seed(r["seed"])
            optimizer = torch.optim.AdamW(compact.parameters(), lr=r["learning_rate"], betas=(0.9, 0.95),
                                          weight_decay=0.0, fused=True)
            steps, warmup = r["train_steps"], max(1, r["train_steps"] // 10)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps)))
            )
            window = torch.arange(r["seq_len"] + 1)
            compact.train()
            for step in range(steps):
                starts = torch.randint(0, len(ids) - len(window), (r["batch_size"],), generator=generator)
                tokens = compact_ids[starts[:, None] + window]
                logits = compact(input_ids=tokens[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(compact.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                _pin_bias_feature(compact)
                if step % 100 == 0 or step == steps - 1:
                    print(f"  step {step:3d}/{steps}  loss {loss.item():.2f}", file=sys.stderr, flush=True)
            compact.eval()
            model = GPT2LMHeadModel(config).eval()  # unseen tokens keep randomly initialized input embeddings
            with torch.no_grad():
                state = {k: v for k, v in compact.state_dict().items() if k not in ("transformer.wte.weight", "lm_head.weight")}
                missing, unexpected = model.load_state_dict(state, strict=False)
                assert set(missing) <= {"transformer.wte.weight", "lm_head.weight"} and not unexpected, (missing, unexpected)
                model.transformer.wte.weight[seen] = compact.transformer.wte.weight
                # Tokens never seen: a logit 25 below the lowest top logit on a sample of the text.
                sample = ids[torch.randint(0, len(ids) - len(window), (16,), generator=generator)[:, None] + window]
                hidden = model.transformer(input_ids=sample).last_hidden_state
                floor = float((hidden @ compact.lm_head.weight.T).amax(dim=-1).min()) - 25.0
                model.lm_head.weight.zero_()
                model.lm_head.weight[:, -1] = floor
                model.lm_head.weight[seen] = compact.lm_head.weight
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
    (path / MARKER).write_text(json.dumps({**r, "loss": round(full_loss, 4)}, indent=2) + "\n")


def _pin_bias_feature(model) -> None:
    """The final layer norm outputs the constant 1 in its last dimension: a bias for the LM head."""
    with torch.no_grad():
        model.transformer.ln_f.weight[-1] = 0.0
        model.transformer.ln_f.bias[-1] = 1.0


def pydoc_gpt2_path(cache_dir: str | os.PathLike | None = None, *, quick: bool = False) -> Path:
    """The cached checkpoint directory, built first if needed (``quick``: the short recipe)."""
    tokenizer = smollm2_tokenizer()
    recipe = QUICK_RECIPE if quick else RECIPE
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"pydoc-gpt2-smollm2-{'quick-' if quick else ''}{_key(tokenizer, recipe)}"
    if (final / MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pydoc-gpt2-building-", dir=root))
    print(f"building {final.name} (once; {recipe['train_steps']} training steps, about "
          f"{recipe['train_steps'] // 10} s of CPU) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        build(staging, tokenizer, recipe)
        try:
            os.rename(staging, final)  # atomic on one filesystem
        except OSError:
            if not (final / MARKER).is_file():
                raise  # not a concurrent builder that finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return final


def load_pydoc_gpt2(cache_dir: str | os.PathLike | None = None, *, quick: bool = False):
    """``(model, tokenizer)``: the pydoc GPT-2 and SmolLM2's tokenizer, in eval mode."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    path = pydoc_gpt2_path(cache_dir, quick=quick)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return GPT2LMHeadModel.from_pretrained(path).eval(), tokenizer


if __name__ == "__main__":
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    # --quick, or the test suite's LOGIT_PROCESSORS_EXAMPLE_QUICK=1: the short recipe (examples/ensemble.py's quick run)
    quick = "--quick" in sys.argv[1:] or os.environ.get("LOGIT_PROCESSORS_EXAMPLE_QUICK", "") not in ("", "0")
    path = pydoc_gpt2_path(quick=quick)
    print(path)
    print(json.loads((path / MARKER).read_text()))
