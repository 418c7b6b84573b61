"""Running models beside ``generate()``: the plumbing every model-running room shares.

* :mod:`.model_inputs`: device, forward signature, KV-cache keyword, context length, and id
  batches padded the way ``generate()`` pads them;
* :mod:`.prompts`: a prompt as the model sees it (chat template) and where the user's text is;
* :mod:`.generation`: ``generate()`` with only your processors touching the scores;
* :mod:`.members`: other models run in step with ``generate()``, one KV cache each;
* :mod:`.text_codec`, :mod:`.vocabulary_map`, :mod:`.aligned_members`: a model with another
  tokenizer run in step with ``generate()`` on the same text (token bytes, the map between
  vocabularies, and the member whose cache follows the re-encoded text);
* :mod:`.streamed_logits`: teacher-forced logits of long texts in bounded memory.
* :mod:`.memory`: freed heap memory given back to the system between large batches.
"""

from .generation import neutral_sampling_settings, run_generate
from .aligned_members import AlignedMember
from .members import CachedMembers
from .prompts import EncodedPrompt, encode_prompt
from .streamed_logits import TeacherForcedLogits, text_windows
from .text_codec import TextCodec
from .vocabulary_map import VocabularyMap

__all__ = [
    "AlignedMember",
    "CachedMembers",
    "EncodedPrompt",
    "TeacherForcedLogits",
    "TextCodec",
    "VocabularyMap",
    "encode_prompt",
    "neutral_sampling_settings",
    "run_generate",
    "text_windows",
]
