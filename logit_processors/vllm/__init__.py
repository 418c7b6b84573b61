"""Serving the same processors in vLLM: one spec per request, over Python and HTTP.

Install this package into vLLM's environment (``pip install "logit_processors[vllm]"``; on a CPU
machine ``bash scripts/setup-vllm.sh``): its entry point ``vllm.logits_processors`` makes every
vLLM engine load :class:`~logit_processors.vllm.plugin.LogitProcessors`. A request then asks for
processors with a spec (:func:`logit_processors.to_spec`)::

    SamplingParams(extra_args={"logit_processors": spec})                 # LLM.generate
    {"model": ..., "prompt": ..., "vllm_xargs": {"logit_processors": json.dumps(spec)}}  # HTTP: JSON text

and for its per-token gap trace with ``"logit_processors_trace": "KEY"`` (written to
``$LOGIT_PROCESSORS_TRACE_DIR/KEY.jsonl``, read back with :func:`read_trace`). The spec is checked
at admission (a bad one is a 400 for that request alone); requests without these keys pass
through untouched. Our processors run before vLLM's own sampling parameters (temperature, top-k,
top-p, min-p): leave those at their neutral values when the spec does the shaping.

The room: :mod:`.requests` (arguments, batching by spec; no vLLM), :mod:`.traces` (gap traces;
no vLLM), :mod:`.engine` (the engine's model, tokenizer, EOS), :mod:`.v1` and :mod:`.v2` (one
adapter per vLLM interface) and :mod:`.plugin` (the class vLLM loads). Importing this package
does not import vLLM; the adapters do.
"""

from .requests import SPEC_KEY, TRACE_KEY, BatchProcessors, RequestArgs, read_request
from .traces import TRACE_DIR_ENV, TraceSink, read_trace

__all__ = ["SPEC_KEY", "TRACE_DIR_ENV", "TRACE_KEY", "BatchProcessors", "LogitProcessors", "RequestArgs", "TraceSink",
           "read_request", "read_trace"]


def __getattr__(name: str):
    if name == "LogitProcessors":  # imports vLLM
        from .plugin import LogitProcessors

        return LogitProcessors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
