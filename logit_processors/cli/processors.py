"""From flags to processors, and generation with exactly those processors.

:func:`build_processors` turns the flags into the processor list (``--calibration`` first, then an
ensemble, masks, temperature, truncation); :func:`generate_from_flags` runs ``generate()`` with it,
Hugging Face's own sampling warpers switched off
(:func:`~logit_processors.runtime.generation.neutral_sampling_settings`), so neither the model's
``generation_config`` defaults nor transformers' global ``top_k=50`` are applied on top.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import torch

from ..processors import EntropyTemperature, MinP, PhraseBan, Temperature, TokenMask, TopK, TopP
from ..runtime.generation import run_generate
from ..runtime.prompts import encode_prompt
from ..spec import from_spec
from . import calibrate, ensemble
from .common import PROG, LoadedModel, fail, from_flag, one_line

#: The flags that only change which token is sampled, not which is most likely.
SAMPLING_FLAGS = ("temperature", "entropy_temperature", "top_k", "top_p", "min_p")


def sampling_processors(args: argparse.Namespace) -> list:
    """The processors that need no tokenizer (temperatures, truncations), in application order.

    Built before the model is loaded, so a bad value fails at once. Errors name the flag.
    """
    builders = {
        "temperature": Temperature,
        "entropy_temperature": lambda v: EntropyTemperature(*v),
        "top_k": TopK,
        "top_p": TopP,
        "min_p": MinP,
    }
    return [from_flag(name, builder, getattr(args, name)) for name, builder in builders.items()
            if getattr(args, name) is not None]


def spec_processors(args: argparse.Namespace, tokenizer) -> list:
    """The chain of ``--processors FILE.json`` (checked when the flags were parsed), bound to the tokenizer."""
    if args.processors is None:
        return []
    return list(from_flag("processors", from_spec, args.processors, tokenizer))


def masking_processors(args: argparse.Namespace, tokenizer, vocab_size: int) -> list:
    """``TokenMask`` for ``--deny`` and ``PhraseBan`` for ``--ban`` (they need the tokenizer)."""
    processors = []
    if args.deny:
        ids = from_flag("deny", deny_token_ids, args.deny, tokenizer, vocab_size)
        processors.append(TokenMask(deny=ids))
    if args.ban:
        processors.append(from_flag("ban", PhraseBan, args.ban, tokenizer))
    return processors


def build_processors(args: argparse.Namespace, tokenizer, vocab_size: int) -> list:
    """All processors from the flags: ``--processors FILE.json``'s chain, then masks (so truncation
    chooses among allowed tokens), then temperature (as Hugging Face does, so top-p sees the tempered distribution), then
    truncation. An ensemble or contrastive decoding (loading its models) comes first of all,
    after only ``--calibration`` (a property of the model: its logits divided by the fitted T)."""
    return [
        *calibrate.processors(args),
        *ensemble.processors(args, tokenizer),
        *spec_processors(args, tokenizer),
        *masking_processors(args, tokenizer, vocab_size),
        *sampling_processors(args),
    ]


def deny_token_ids(values: Sequence[str], tokenizer, vocab_size: int) -> list[int]:
    """Token ids for ``--deny`` values: comma-separated items, each a token id or a word.

    A word denies the single tokens that spell it as given and with a leading space (byte-level
    BPE spells ``"Paris"`` and ``" Paris"`` differently); a word that is no single token in
    either spelling is an error pointing at ``--ban``. (To deny the comma token, give its id.)

    Example:
        >>> from logit_processors.models import load_tiny_gpt2
        >>> _, tokenizer = load_tiny_gpt2()
        >>> ids = deny_token_ids(["13,198", "with"], tokenizer, 2048)
        >>> ids[:2], tokenizer.convert_ids_to_tokens(ids[2:])
        ([13, 198], ['Ġwith', 'with'])
    """
    ids: list[int] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                raise ValueError(f"{value!r} has an empty item; give comma-separated token ids and/or words")
            if re.fullmatch(r"\s*\d+\s*", item):
                if int(item) >= vocab_size:
                    raise ValueError(f"token id {int(item)} is outside the model's vocabulary 0..{vocab_size - 1}")
                ids.append(int(item))
            else:
                ids.extend(_single_token_spellings(item.strip(), tokenizer))
    return sorted(set(ids))


def _single_token_spellings(word: str, tokenizer) -> list[int]:
    spellings = dict.fromkeys([word, word if word.startswith(" ") else " " + word])
    encoded = {s: tokenizer.encode(s, add_special_tokens=False) for s in spellings}
    found = [ids[0] for ids in encoded.values() if len(ids) == 1]
    if not found:
        pieces = tokenizer.convert_ids_to_tokens(encoded[word])
        raise ValueError(
            f"{word!r} is not a single token ({len(encoded[word])} tokens: {pieces}); "
            f"use --ban {word!r} to ban a phrase of several tokens"
        )
    return found


def note_greedy(args: argparse.Namespace) -> None:
    """Say on stderr which sampling flags ``--greedy`` makes pointless."""
    if args.greedy:
        ignored = [f"--{n.replace('_', '-')}" for n in SAMPLING_FLAGS if getattr(args, n) is not None]
        if ignored:
            print(f"{PROG}: note: {', '.join(ignored)} cannot change the most likely token; "
                  "they have no effect with --greedy", file=sys.stderr)


def prompt_inputs(tokenizer, prompt: str, *, chat_template: bool) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[1, T]`` for ``prompt``, as the model sees it (see
    :func:`~logit_processors.runtime.prompts.encode_prompt`)."""
    try:
        encoded = encode_prompt(tokenizer, prompt, chat_template=chat_template, scored=False)
    except ValueError as error:
        raise fail(one_line(error)) from error
    ids = torch.tensor([encoded.input_ids], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def generate_from_flags(args: argparse.Namespace, loaded: LoadedModel, prompt: str, monitor=None):
    """Run generation from the flags; ``(prompt_ids [T], generated_ids [N], output, inputs)``."""
    processors = build_processors(args, loaded.tokenizer, loaded.vocab_size)
    if monitor is not None:  # first: it records the model's own distribution
        processors.insert(0, monitor)
    inputs = prompt_inputs(loaded.tokenizer, prompt, chat_template=args.chat_template)
    device = next(loaded.model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    try:
        output = run_generate(loaded.model, inputs, processors, greedy=args.greedy,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    except ValueError as error:  # e.g. every token masked at some step
        raise fail(one_line(error)) from error
    prompt_ids = inputs["input_ids"][0].cpu()
    generated = output.sequences[0, prompt_ids.shape[0]:].cpu()
    return prompt_ids, generated, output, inputs
