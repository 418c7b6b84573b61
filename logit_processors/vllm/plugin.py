"""``LogitProcessors``: the class vLLM loads, for whichever interface the installed vLLM provides.

Registered under the entry-point group ``vllm.logits_processors`` (pyproject.toml), so every vLLM
engine in an environment where this package is installed loads it; ``LLM(logits_processors=[...])``
and ``vllm serve --logits-processors logit_processors.vllm.plugin:LogitProcessors`` name it
explicitly (harmless: an engine applies it once). It derives from the adapter of each interface
the installed vLLM has (:class:`.v1.V1Adapter`, :class:`.v2.V2Adapter`), so it passes the check
of either loader, and acts as the one vLLM's model runner builds it for: ``(vllm_config, device,
is_pin_memory)`` is the first interface, ``(vllm_config, req_states)`` Model Runner V2.
"""

from __future__ import annotations

adapters: list[type] = []
try:
    from .v1 import V1Adapter

    adapters.append(V1Adapter)
except ImportError:  # vLLM 0.33+: the first interface is gone
    V1Adapter = None
try:
    from .v2 import V2Adapter

    adapters.append(V2Adapter)
except ImportError:  # vLLM before Model Runner V2
    V2Adapter = None
if not adapters:
    raise ImportError("logit_processors.vllm needs vLLM 0.32 or later (neither of its logits-processor interfaces "
                      "could be imported): pip install 'logit_processors[vllm]'")


class LogitProcessors(*adapters):
    """Per-request ``logit_processors`` specs in vLLM (see :mod:`logit_processors.vllm`)."""

    def __init__(self, vllm_config, *args):
        self.interface = V1Adapter if len(args) == 2 else V2Adapter
        if self.interface is None:
            raise TypeError(f"LogitProcessors: vLLM built it with {len(args) + 1} arguments, an interface this vLLM "
                            "does not provide")
        self.interface.__init__(self, vllm_config, *args)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        adapters[0].validate_params(sampling_params)

    def apply(self, logits, ctx=None):
        return V1Adapter.apply(self, logits) if self.interface is V1Adapter else V2Adapter.apply(self, logits, ctx)
