"""The engine's side of an adapter, read from vLLM's config without importing vLLM: the model's
width, its tokenizer (loaded on first use), its EOS ids, the trace sink; and the guard against
registering the adapter twice in one engine.
"""

from __future__ import annotations

import threading
import weakref

from .requests import BatchProcessors
from .traces import TraceSink


def engine_batch(vllm_config) -> BatchProcessors:
    """A :class:`BatchProcessors` for the model a vLLM config serves."""
    model_config = vllm_config.model_config
    lock = threading.Lock()
    loaded: list = []

    def tokenizer():
        with lock:
            if not loaded:
                from transformers import AutoTokenizer

                loaded.append(AutoTokenizer.from_pretrained(
                    model_config.tokenizer, revision=getattr(model_config, "tokenizer_revision", None),
                    trust_remote_code=getattr(model_config, "trust_remote_code", False)))
            return loaded[0]

    eos = getattr(model_config.hf_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer().eos_token_id
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return BatchProcessors(model_config.get_vocab_size(), tokenizer, eos_ids, TraceSink.from_environment())


_CLAIMED: dict[int, weakref.ref] = {}


def first_for_engine(vllm_config, adapter) -> bool:
    """Whether ``adapter`` is the first of ours built for this engine. vLLM builds every class of
    the entry-point group *and* every class passed with ``logits_processors=``: naming ours there
    as well would otherwise apply each request's processors twice."""
    key = id(vllm_config)
    previous = _CLAIMED.get(key)
    holder = previous() if previous is not None else None
    if holder is not None and holder.vllm_config is vllm_config:
        return False
    _CLAIMED[key] = weakref.ref(adapter)
    return True
