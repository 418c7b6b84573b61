"""The distribution an ensemble across tokenizers *generates* from, scored teacher-forced in bits per byte.

:class:`~logit_processors.LogOddsEnsemble` with a member of another tokenizer combines, at every
step, the primary's next-token distribution with the member's distribution over the primary's
tokens (:mod:`logit_processors.runtime.aligned_members`). :func:`generation_scores` runs exactly
that machinery over a text encoded canonically by the primary (each document after the primary's
start token), position by position, and keeps at every position the log-probability each model
gives the text's actual next token, and, for products of experts, the combined log-probability
for a grid of member weights (the normalizer over the primary's vocabulary needs every token, so
it is computed while the step's distributions are in memory). Unlike the byte-span mixture of
:mod:`.byte_spans`, this is a sequential predictor, normalized at every step: its bits per byte
are an honest code length for the text (for the primary's canonical tokenization).

Example:
    >>> from logit_processors.models import load_tiny_gemma, load_tiny_gpt2
    >>> gpt2, gpt2_tokenizer = load_tiny_gpt2()
    >>> gemma, gemma_tokenizer = load_tiny_gemma()
    >>> scores = generation_scores(gpt2, gpt2_tokenizer, [gemma], [gemma_tokenizer], ["The if statement."])
    >>> scores.targets.shape                   # positions x (primary, member)
    torch.Size([4, 2])
    >>> scores.bits_per_byte([0.5, 0.5]) < max(scores.bits_per_byte([1, 0]), scores.bits_per_byte([0, 1]))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..runtime.aligned_members import AlignedMember
from ..runtime.model_inputs import check_length
from ..runtime.streamed_logits import TeacherForcedLogits
from ..runtime.text_codec import TextCodec
from ..runtime.vocabulary_map import VocabularyMap
from .byte_spans import LOG2, fit_mixture_weights
from .combine import combine_log_probs, temperature_value

#: Member weights (the primary's is 1) at which a product of experts is scored by default.
PRODUCT_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5)


@dataclass
class GenerationScores:
    """Teacher-forced scores of the generation-mode distribution.

    ``targets [positions, models]``: each model's log-probability (nats; members: over the
    primary's tokens) of the actual next token; ``product [positions, len(weights)]``: the
    normalized product of experts' (``"logprob"``: weighted log-probs added; ``"logodds"``:
    weighted log-odds) at each ``(primary weight, member weight)`` of ``weights``; ``n_bytes``:
    the text's length; ``documents [positions]``: the document each position belongs to (positions
    of one document are in order).
    """

    targets: torch.Tensor
    product: torch.Tensor | None
    n_bytes: int
    weights: list[tuple[float, float]]
    documents: torch.Tensor | None = None

    def per_document(self) -> list[torch.Tensor]:
        """``targets`` split by document, each ``[positions, models]`` in the text's order."""
        if self.documents is None:
            return [self.targets]
        if not len(self.documents):
            return []
        return [self.targets[self.documents == d] for d in range(int(self.documents.max()) + 1)]

    def bits_per_byte(self, weights: Sequence[float]) -> float:
        """Bits per byte of the mixture ``sum_i w_i p_i`` (weights normalized to sum 1)."""
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum; got {list(weights)}")
        mixed = torch.logsumexp(self.targets.double() + (w / w.sum()).log(), dim=1)
        return -float(mixed.sum()) / LOG2 / self.n_bytes

    def fit_mixture(self) -> list[float]:
        """Mixture weights maximizing the likelihood of these positions (EM)."""
        return fit_mixture_weights(self.targets)

    def product_bits_per_byte(self) -> list[float]:
        """Bits per byte of the product of experts at each of :attr:`weights`."""
        if self.product is None:
            raise ValueError("products of experts are scored for one member only")
        return (-self.product.double().sum(dim=0) / LOG2 / self.n_bytes).tolist()


def generation_scores(primary, primary_tokenizer, members: Sequence, member_tokenizers: Sequence,
                      texts: Sequence[str], *, temperatures: Sequence[object] | None = None,
                      product: str | None = "logprob",
                      product_weights: Sequence[tuple[float, float]] | None = None) -> GenerationScores:
    """Score ``texts`` (each its own document) with the generation-mode distribution; see the module
    docstring. ``temperatures``: one per model (primary first), numbers or fitted calibrations;
    ``product``: ``"logprob"``, ``"logodds"`` or None (no product of experts; one member only);
    ``product_weights``: its ``(primary, member)`` weights (default: 1 and each of :data:`PRODUCT_WEIGHTS`)."""
    temperatures = [temperature_value(f"temperatures[{k}]", t) for k, t in
                    enumerate(temperatures or [1.0] * (len(members) + 1))]
    codec = TextCodec.of(primary_tokenizer, "the primary model's tokenizer")
    readers = [
        AlignedMember(model, codec, TextCodec.of(tok, f"member #{k}'s tokenizer"), temperature=temperatures[k + 1],
                      vocabulary_map=VocabularyMap.of(codec, TextCodec.of(tok, f"member #{k}'s tokenizer")))
        for k, (model, tok) in enumerate(zip(members, member_tokenizers, strict=True))
    ]
    documents = [codec.encode(text) for text in texts]
    start, pad = codec.start_ids, codec.start_ids[0]  # a special token: it spells no text
    for ids in documents:
        check_length(primary, len(start) + len(ids), what="a document")
    streams = [_primary_rows(primary, start + ids, temperatures[0], len(codec), len(start) - 1) for ids in documents]
    steps = max((len(ids) for ids in documents), default=0)
    history = torch.tensor([start] * len(documents), dtype=torch.long)
    targets, products, owners = [], [], []
    pairs = [tuple(map(float, w)) for w in (product_weights or [(1.0, w) for w in PRODUCT_WEIGHTS])]
    for step in range(steps):
        primary_rows = [next(streams[row]) if step < len(ids) else None for row, ids in enumerate(documents)]
        primary_log_probs = torch.stack([r if r is not None else torch.zeros(len(codec)) for r in primary_rows])
        member_rows = [reader.next_token_log_probs(history, primary_log_probs) for reader in readers]
        column = []
        for row, ids in enumerate(documents):
            target = ids[step] if step < len(ids) else pad
            column.append(target)
            if step >= len(ids):
                continue
            primary_row = primary_rows[row]
            picked = [float(primary_row[target])] + [float(m[row, target]) for m in member_rows]
            targets.append(picked)
            owners.append(row)
            if product and len(readers) == 1:
                pair = [primary_row[None], member_rows[0][row : row + 1]]  # what the ensemble combines
                products.append([float(combine_log_probs(pair, list(w), product)[0, target]) for w in pairs])
        history = torch.cat([history, torch.tensor(column)[:, None]], dim=1)
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    product_scores = torch.tensor(products, dtype=torch.float64) if products else None
    return GenerationScores(torch.tensor(targets, dtype=torch.float64), product_scores, n_bytes, pairs,
                            torch.tensor(owners, dtype=torch.long))


def _primary_rows(model, window: list[int], temperature: float, n_tokens: int, skip: int):
    """The primary's log-probabilities ``[n_tokens]`` at each position of ``window`` after the first
    ``skip`` predictions (those of the start tokens), one row at a time, in bounded memory."""
    seen = 0
    for logits, _ in TeacherForcedLogits(model, [window], batch_size=1):
        for row in torch.log_softmax(logits[:, :n_tokens] / temperature, dim=-1):
            seen += 1
            if seen > skip:
                yield row
