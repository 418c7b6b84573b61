"""Processors as data: one JSON description of a processor chain for Python, the command line
(``logit-processors generate --processors FILE.json``) and HTTP (vLLM's ``"vllm_xargs"``).

A spec is a JSON object ``{"processors": [step, ...]}`` (a chain, applied in order) or a single
step. A step names its ``"type"`` and the constructor arguments that differ from the defaults::

    {"processors": [
        {"type": "phrase_ban", "phrases": ["Paris"]},
        {"type": "temperature", "temperature": 0.7},
        {"type": "top_p", "p": 0.9}
    ]}

* :func:`to_spec` writes one for any stateless processor or chain of them; :func:`from_spec` builds
  it back, and ``from_spec(to_spec(p))`` gives exactly the scores ``p`` gives.
* Text stays text: phrases and vocabulary predicates are kept as strings, and whoever runs the spec
  binds them to its own tokenizer (``from_spec(spec, tokenizer=...)``); token ids stay ids.
* Bad specs raise :class:`SpecError` (a ``ValueError``) naming the field, e.g.
  ``processors[1] (top_p): p must be a number in [0, 1]; got 1.5``; so do specs over the size
  limits (:class:`SpecLimits`: a spec arriving over HTTP must not make a server build something
  huge), and :func:`check_spec` validates one without a tokenizer (at a server's door).

The room: :mod:`.convert` (the three functions), :mod:`.kinds` (the table of step types: fields,
defaults, how each is read and built) and :mod:`.limits` (the size caps and the error).

Example:
    >>> import torch
    >>> from logit_processors import Temperature, TopK, from_spec, to_spec
    >>> spec = to_spec(Temperature(0.5) | TopK(2))
    >>> spec
    {'processors': [{'type': 'temperature', 'temperature': 0.5}, {'type': 'top_k', 'k': 2}]}
    >>> chain = from_spec(spec)
    >>> chain(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[3.0, 2.0, 1.0]])).tolist()
    [[6.0, 4.0, -inf]]
    >>> from_spec('{"type": "top_p", "p": 1.5}')
    Traceback (most recent call last):
    ...
    logit_processors.spec.limits.SpecError: spec (top_p): p must be a number in [0, 1]; got 1.5
"""

from .convert import check_spec, from_spec, spec_steps, to_spec
from .kinds import KINDS, Kind
from .limits import DEFAULT_LIMITS, SpecError, SpecLimits

__all__ = ["DEFAULT_LIMITS", "KINDS", "Kind", "SpecError", "SpecLimits", "check_spec", "from_spec", "spec_steps", "to_spec"]
