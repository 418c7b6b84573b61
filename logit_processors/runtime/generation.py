"""``generate()`` with exactly the processors you pass touching the scores.

With ``do_sample=True``, Hugging Face's ``generate()`` runs the user's ``logits_processor`` after
its own non-sampling processors and *before* the sampling warpers it builds from the generation
config (temperature, top-k, top-p, ...): a model's ``generation_config.json`` defaults (many chat
models ship a temperature and top-p) and, in transformers 5, a global ``top_k=50``.
:func:`neutral_sampling_settings` switches those warpers off, so a :class:`~logit_processors.TopP`
in your list is not followed by another one; :func:`run_generate` passes them for you.

Example:
    >>> from logit_processors import Temperature, TopK
    >>> from logit_processors.models import load_tiny_gpt2
    >>> model, tokenizer = load_tiny_gpt2()
    >>> inputs = tokenizer(["The with statement"], return_tensors="pt")
    >>> out = run_generate(model, inputs, [Temperature(0.7), TopK(5)], greedy=False, max_new_tokens=4, seed=0)
    >>> out.sequences.shape
    torch.Size([1, 7])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core import raise_pending_checks

#: GenerationConfig fields from which ``generate(do_sample=True)`` builds sampling warpers,
#: applied *after* user processors. All are set to None by :func:`neutral_sampling_settings`;
#: each is only passed where this transformers has it.
SAMPLING_WARPER_FIELDS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")


def neutral_sampling_settings() -> dict[str, None]:
    """``generate()`` keyword arguments that switch off Hugging Face's sampling warpers.

    Passing these fields as ``None`` (explicit keyword arguments win over both the model's
    generation config and transformers' defaults) leaves your processors the only ones that
    sample; other processors a model's config asks for (repetition penalty, suppressed tokens)
    stay.

    Example:
        >>> sorted(neutral_sampling_settings())[:3]
        ['epsilon_cutoff', 'eta_cutoff', 'min_p']
    """
    from transformers import GenerationConfig

    defaults = GenerationConfig()
    return {name: None for name in SAMPLING_WARPER_FIELDS if hasattr(defaults, name)}


def run_generate(
    model,
    inputs: Mapping[str, torch.Tensor],
    processors: Sequence,
    *,
    greedy: bool,
    max_new_tokens: int,
    seed: int | None = None,
    **generate_kwargs: Any,
):
    """``model.generate()`` with exactly ``processors`` touching the scores; returns the
    ``GenerateOutput`` (``return_dict_in_generate=True``)."""
    from transformers import LogitsProcessorList, set_seed

    if seed is not None:
        set_seed(seed)
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            logits_processor=LogitsProcessorList(processors),
            do_sample=not greedy,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            **{**neutral_sampling_settings(), **generate_kwargs},
        )
    raise_pending_checks()  # on CUDA, the input policy's last checks are read here
    return output
