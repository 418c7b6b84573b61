"""A catalogue of bad and unusual inputs for every public processor, and how to judge the outcome.

Used by tests/test_bad_input.py (every case must come out right) and by
scripts/bad_input_census.py (counts per outcome, also against an older checkout). Each case is
one call (a constructor, or a processor call) with what must happen:

* ``expect="error"``: bad input; the call must raise ``ValueError``/``TypeError`` whose message
  contains every word in ``names`` (the processor, the argument, the bad value...);
* ``expect="ok"``: unusual but valid input; the call must return a valid result: a float tensor
  of the scores' shape and dtype, no NaN, no ``+inf``, at least one finite entry per row, the
  caller's tensor untouched (``check`` may add more).

Outcomes: ``correct`` (as expected: a valid result, or a clear error), ``obscure error`` (any
other exception, or an error that does not say what is wrong), ``silent bad output`` (bad input
accepted, or a result that breaks the rules above).

New public processors are found from ``logit_processors.__all__``: each needs a factory in
:data:`FACTORIES` (tests/test_bad_input.py fails until it has one).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

import logit_processors as lp

try:  # this layout, or the flat one of older checkouts (the census runs against both)
    from logit_processors.models.tiny_gpt2 import corpus, load_tiny_gpt2
except ImportError:  # pragma: no cover - older checkouts only
    from logit_processors.testing import corpus, load_tiny_gpt2

NAN, INF = math.nan, math.inf
OUTCOMES = ("correct", "obscure error", "silent bad output")


@dataclass
class Case:
    processor: str
    kind: str
    label: str
    run: Callable[[], object]
    expect: str  # "error" or "ok"
    names: tuple[str, ...] = ()
    check: Callable[[object], str | None] | None = None
    inputs: tuple[torch.Tensor, ...] = field(default=(), repr=False)  # must be untouched by the call
    scores: torch.Tensor | None = field(default=None, repr=False)  # the scores the result must match


def judge(case: Case) -> tuple[str, str]:
    """``(outcome, detail)`` of running ``case`` once."""
    before = [t.clone() for t in case.inputs]
    try:
        out = case.run()
    except (ValueError, TypeError) as error:
        message = str(error)
        if case.expect == "ok":
            return "obscure error", f"a valid input was refused: {type(error).__name__}: {message[:200]}"
        missing = [n for n in case.names if not says(message, n)]
        if missing:
            return "obscure error", f"{type(error).__name__} does not say {missing}: {message[:200]}"
        return "correct", ""
    except Exception as error:  # noqa: BLE001 - any other exception is what this counts
        return "obscure error", f"{type(error).__name__}: {str(error)[:200]}"
    for tensor, copy in zip(case.inputs, before, strict=True):
        if not torch.equal(tensor.nan_to_num(), copy.nan_to_num()) or not torch.equal(tensor.isnan(), copy.isnan()):
            return "silent bad output", "the caller's tensor was modified"
    if case.expect == "error":
        return "silent bad output", f"bad input accepted: returned {_describe(out)}"
    problem = valid_result(out, case.scores) if case.scores is not None else None
    if problem is None and case.check is not None:
        problem = case.check(out)
    return ("correct", "") if problem is None else ("silent bad output", problem)


def says(message: str, word: str) -> bool:
    """Whether an error message says ``word`` (case-insensitive); ``"row 3"`` is also said by a
    list of rows that holds 3 (``"row(s) [1, 3]"``)."""
    row = re.fullmatch(r"row (\d+)", word)
    if row:
        return re.search(rf"\brows?(?:\(s\))?\s*\[?(?:\d+,\s*)*{row[1]}\b", message) is not None
    return word.lower() in message.lower()


def valid_result(out: object, scores: torch.Tensor) -> str | None:
    """What is wrong with ``out`` as the result of processing ``scores`` (None: nothing)."""
    if not isinstance(out, torch.Tensor):
        return f"returned {_describe(out)}"
    if out.shape != scores.shape or out.dtype != scores.dtype:
        return f"returned {_describe(out)} for scores {_describe(scores)}"
    if not out.numel():
        return None
    wide = out.double()
    if bool(wide.isnan().any()):
        return "NaN in the result"
    if bool((wide == INF).any()):
        return "+inf in the result"
    empty = (wide == -INF).all(dim=-1)
    if bool(empty.any()):
        return f"row(s) {empty.nonzero().flatten().tolist()} left without a finite entry"
    return None


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor {tuple(x.shape)} {x.dtype}"
    return f"{type(x).__name__} {x!r:.60}"


# --------------------------------------------------------------------------------------------
# The environment: the tiny GPT-2 (and a second one with its tokenizer), a fitted detector


class Environment:
    def __init__(self) -> None:
        self.model, self.tokenizer = load_tiny_gpt2()
        self.other, _ = load_tiny_gpt2(seed=1)
        self.width = int(self.model.get_output_embeddings().weight.shape[0])  # 2048 columns, 2000 tokens
        self.eos = self.tokenizer.eos_token_id
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            texts = [" ".join(t.split()[:12]) for t in corpus()[:40] if len(t.split()) > 12]
            self._detector = lp.Detector.fit(self.model, self.tokenizer, texts, fpr=0.1, chat_template=False)
        return self._detector


#: Per public processor: how to build a working one (``env``, and keyword overrides).
FACTORIES: dict[str, Callable[..., LogitsProcessor]] = {
    "Temperature": lambda env, **kw: lp.Temperature(kw.pop("temperature", 0.7), **kw),
    "EntropyTemperature": lambda env, **kw: lp.EntropyTemperature(kw.pop("min_t", 0.5), kw.pop("max_t", 1.5), **kw),
    "CalibratedTemperature": lambda env, **kw: lp.CalibratedTemperature(kw.pop("temperature", 1.3), **kw),
    "TopK": lambda env, **kw: lp.TopK(kw.pop("k", 5), **kw),
    "TopP": lambda env, **kw: lp.TopP(kw.pop("p", 0.9), **kw),
    "MinP": lambda env, **kw: lp.MinP(kw.pop("p", 0.1), **kw),
    "TokenMask": lambda env, **kw: lp.TokenMask(deny=kw.pop("deny", [3, 4]), **kw),
    "VocabFilter": lambda env, **kw: lp.VocabFilter(kw.pop("tokenizer", env.tokenizer), kw.pop("predicate", str.isascii), **kw),
    "PhraseBan": lambda env, **kw: lp.PhraseBan(kw.pop("phrases", ["the with statement"]), kw.pop("tokenizer", env.tokenizer), **kw),
    "LogOddsEnsemble": lambda env, **kw: lp.LogOddsEnsemble(
        kw.pop("members", env.other), kw.pop("weights", [0.5, 0.5]), tokenizer=kw.pop("tokenizer", env.tokenizer), **kw
    ),
    "ContrastiveDecoding": lambda env, **kw: lp.ContrastiveDecoding(
        kw.pop("amateur", env.other), tokenizer=kw.pop("tokenizer", env.tokenizer), **kw
    ),
    "LogitGapMonitor": lambda env, **kw: lp.LogitGapMonitor(kw.pop("tokenizer", env.tokenizer), **kw),
    "GapGuard": lambda env, **kw: lp.GapGuard(kw.pop("detector", env.detector), kw.pop("policy", "record"), **kw),
    "Chain": lambda env, **kw: lp.Chain(lp.Temperature(0.7), lp.TopK(5)),
}

#: Processors whose vocabulary is not fixed at construction (they work on any width).
ANY_WIDTH = ("Temperature", "EntropyTemperature", "TopK", "TopP", "MinP", "Chain")
#: Processors that run models on input_ids (so the ids must be real token ids).
RUN_MODELS = ("LogOddsEnsemble", "ContrastiveDecoding")


def public_processors() -> list[str]:
    """The names in ``logit_processors.__all__`` that are concrete logits processors."""
    abstract = {"Processor", "MaskingProcessor"}
    return sorted(
        name for name in lp.__all__
        if isinstance(getattr(lp, name), type) and issubclass(getattr(lp, name), (LogitsProcessor, lp.Chain))
        and name not in abstract
    )


# --------------------------------------------------------------------------------------------
# The cases


def ids_for(rows: int, env: Environment, length: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 1900, (rows, length), generator=g)


def scores_for(rows: int, width: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(rows, width, generator=g)).to(dtype)


def call_case(env, name, kind, label, scores, expect, names=(), ids=None, make=None, check=None) -> Case:
    make = make or (lambda: FACTORIES[name](env))
    ids = ids_for(scores.shape[0], env) if ids is None else ids
    inputs = tuple(t for t in (ids, scores) if isinstance(t, torch.Tensor) and not t.is_meta)
    return Case(name, kind, label, lambda: make()(ids, scores), expect, names, check, inputs,
                scores if expect == "ok" and isinstance(scores, torch.Tensor) and scores.dim() == 2 else None)


def value_cases(env: Environment, name: str) -> list[Case]:
    """NaN, +inf and rows without a finite entry: a clear error that names the processor, the
    row and the value."""
    cases = []
    for label, value, word in (("NaN", NAN, "NaN"), ("+inf", INF, "+inf")):
        for column in (0, 7, env.width - 1):
            scores = scores_for(2, env.width)
            scores[1, column] = value
            cases.append(call_case(env, name, "nan/inf", f"{label} at row 1, column {column}", scores, "error",
                                   (name if name != "Chain" else "", "row 1", word)))
    scores = scores_for(2, env.width)
    scores[0] = -INF
    cases.append(call_case(env, name, "empty row", "row 0 all -inf", scores, "error", ("row 0",)))
    return cases


def shape_cases(env: Environment, name: str) -> list[Case]:
    w = env.width
    bad = [
        ("1-D scores", torch.zeros(2, 3, dtype=torch.long), torch.zeros(w), ("scores",)),
        ("3-D scores", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 1, w), ("scores",)),
        ("integer scores", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, w, dtype=torch.long), ("scores",)),
        ("a list for scores", torch.zeros(2, 3, dtype=torch.long), [[0.0] * w] * 2, ("scores",)),
        ("1-D input_ids", torch.zeros(3, dtype=torch.long), torch.zeros(2, w), ("input_ids",)),
        ("float input_ids", torch.zeros(2, 3), torch.zeros(2, w), ("input_ids",)),
        ("batch mismatch", torch.zeros(3, 3, dtype=torch.long), torch.zeros(2, w), ("input_ids",)),
        ("zero columns", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 0), ("scores",)),
        ("meta scores", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, w, device="meta"), ("meta",)),
    ]
    return [call_case(env, name, "shape", label, scores, "error", names, ids=ids) for label, ids, scores, names in bad]


def unusual_valid_cases(env: Environment, name: str) -> list[Case]:
    """Valid but unusual: an empty batch, other dtypes, one column, a new batch size, ids out of
    the model's range (only processors that run models must refuse those)."""
    w = env.width
    cases = [
        call_case(env, name, "empty batch", "B = 0", scores_for(0, w), "ok",
                  ids=torch.zeros(0, 4, dtype=torch.long)),
    ]
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        cases.append(call_case(env, name, "dtype", str(dtype).replace("torch.", ""), scores_for(2, w, dtype), "ok"))
    if name in ANY_WIDTH:
        cases.append(call_case(env, name, "one column", "V = 1", scores_for(2, 1), "ok"))
    ids = torch.tensor([[5, 6, 2047 + 10_000, 7]] * 2)  # an id beyond every vocabulary here
    if name in RUN_MODELS:
        cases.append(call_case(env, name, "bad ids", "input_ids beyond the model's vocabulary", scores_for(2, w),
                               "error", ("input_ids", "12047"), ids=ids))
    elif name not in ("LogitGapMonitor", "GapGuard"):
        cases.append(call_case(env, name, "bad ids", "input_ids beyond the vocabulary (unused)", scores_for(2, w),
                               "ok", ids=ids))
    return cases


def overflow_cases(env: Environment, name: str) -> list[Case]:
    """Dividing by a small temperature: never inf from finite scores, the order kept."""
    if name not in ("Temperature", "EntropyTemperature"):
        return []
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        huge = torch.tensor([[1e33, -1e33, 0.0], [3.0, 1.0, 2.0]]) if dtype == torch.float32 else torch.tensor(
            [[100.0, -100.0, 0.0], [3.0, 1.0, 2.0]]
        )
        scores = huge.to(dtype)

        def make(dtype=dtype):
            if name == "Temperature":
                return lp.Temperature(1e-6)
            return lp.EntropyTemperature(1e-6, 1e-5)

        def keeps_the_top(out, scores=scores):
            return None if out.float().argmax(-1).tolist() == scores.float().argmax(-1).tolist() else "the argmax moved"

        cases.append(call_case(env, name, "overflow", f"T = 1e-6 on {dtype}", scores, "ok", make=make,
                               ids=torch.zeros(2, 1, dtype=torch.long), check=keeps_the_top))
    return cases


def state_cases(env: Environment, name: str) -> list[Case]:
    """Reused across calls: a longer history, a new batch size, reset(); and shared by 4 threads."""
    w = env.width

    def across_calls():
        proc = FACTORIES[name](env)
        outs = []
        for rows, length in ((2, 4), (2, 5), (3, 4), (1, 7)):
            outs.append(proc(ids_for(rows, env, length, seed=length), scores_for(rows, w, seed=rows + length)))
            problem = valid_result(outs[-1], scores_for(rows, w, seed=rows + length))
            if problem:
                return f"call {len(outs)}: {problem}"
        getattr(proc, "reset", lambda: None)()
        again = proc(ids_for(2, env, 4, seed=4), scores_for(2, w, seed=6))
        return None if torch.equal(again.nan_to_num(), outs[0].nan_to_num()) else "reset() did not start over"

    def threads():
        proc = FACTORIES[name](env)
        if name in ("LogitGapMonitor", "GapGuard", "LogOddsEnsemble", "ContrastiveDecoding"):
            return None  # per-generation state: one generation at a time, by design (documented)
        inputs = [(ids_for(2, env, 4, seed=s), scores_for(2, w, seed=s)) for s in range(8)]
        expected = [proc(i, s) for i, s in inputs]
        results: dict[int, torch.Tensor] = {}

        def work(k):
            for _ in range(3):
                results[k] = proc(*inputs[k])

        workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        same = all(torch.equal(results[k].nan_to_num(), expected[k].nan_to_num()) for k in range(8))
        return None if same else "threads got other results than sequential calls"

    return [
        Case(name, "state", "four calls, new batch sizes, reset", across_calls, "ok", check=lambda problem: problem),
        Case(name, "threads", "one instance, 8 threads", threads, "ok", check=lambda problem: problem),
    ]


BAD_ARGUMENTS: dict[str, list[tuple[dict, tuple[str, ...]]]] = {
    # (keyword overrides for the factory, words the error must contain)
    "Temperature": [({"temperature": v}, ("temperature",)) for v in ("x", 0, -1.0, NAN, INF, 1e-39, None, [0.7])]
    + [({"temperature": torch.tensor([[0.7]])}, ("temperature",)), ({"temperature": torch.tensor([0.7, 0.0])}, ("temperature",))],
    "EntropyTemperature": [({"min_t": 2.0, "max_t": 1.0}, ("max_t",)), ({"min_t": 0}, ("min_t",)), ({"max_t": NAN}, ("max_t",)),
                           ({"exponent": -1}, ("exponent",)), ({"min_t": "a"}, ("min_t",))],
    "CalibratedTemperature": [({"temperature": 0}, ("temperature",)), ({"temperature": "1"}, ("temperature",)),
                              ({"columns": 0}, ("columns",)), ({"temperature": torch.tensor([1.0])}, ("temperature",))],
    "TopK": [({"k": v}, ("k",)) for v in ("5", 0, -1, 1.5, None, True)]
    + [({"min_tokens_to_keep": 0}, ("min_tokens_to_keep",)), ({"on_empty": "skip"}, ("on_empty",)),
       ({"on_empty": "keep_eos"}, ("eos_token_id",)), ({"on_empty": "keep_eos", "eos_token_id": 1.5}, ("eos_token_id",)),
       ({"on_empty": "keep_eos", "eos_token_id": -1}, ("eos_token_id",)), ({"on_empty": "keep_eos", "eos_token_id": "a"}, ("eos_token_id",))],
    "TopP": [({"p": v}, ("p",)) for v in (1.5, -0.1, NAN, "0.9", None)],
    "MinP": [({"p": v}, ("p",)) for v in (1.5, -0.1, NAN, "0.1", None)],
    "TokenMask": [({"deny": v}, ("deny",)) for v in ("abc", [1.5], [-1], 7)]
    + [({"deny": None}, ("allow",)), ({"vocab_size": 0}, ("vocab_size",)), ({"vocab_size": 3, "deny": [5]}, ("deny",)),
       ({"vocab_size": "10"}, ("vocab_size",))],
    "VocabFilter": [({"tokenizer": None}, ("tokenizer",)), ({"tokenizer": "gpt2"}, ("tokenizer",)), ({"predicate": 3}, ("predicate",))],
    "PhraseBan": [({"phrases": "the"}, ("phrases",)), ({"phrases": []}, ("phrases",)), ({"phrases": [3]}, ("phrases",)),
                  ({"tokenizer": "gpt2"}, ("tokenizer",)), ({"tokenizer": None}, ("tokenizer",))],
    "LogOddsEnsemble": [({"members": "gpt2"}, ("members",)), ({"members": []}, ("members",)), ({"weights": [1.0]}, ("weights",)),
                        ({"weights": [0.0, 0.0]}, ("weight",)), ({"weights": [NAN, 1.0]}, ("weights",)),
                        ({"weights": "ab"}, ("weights",)), ({"combine": "sum"}, ("combine",)), ({"tokenizer": "gpt2"}, ("tokenizer",)),
                        ({"pad_token_id": "x"}, ("pad_token_id",)), ({"temperatures": [1.0, 0.0]}, ("temperatures",)),
                        ({"members": [torch.nn.Linear(2, 2)]}, ("member",)),
                        ({"combine": "mixture", "weights": [1.0, -0.5]}, ("mixture", "weights")),
                        ({"combine": "mixture", "prior": torch.ones(2000)}, ("mixture", "prior"))],
    "ContrastiveDecoding": [({"amateur": "gpt2"}, ("amateur",)), ({"alpha": -1}, ("alpha",)), ({"alpha": NAN}, ("alpha",)),
                            ({"plausibility": 2}, ("plausibility",)), ({"amateur_temperature": 0}, ("amateur_temperature",)),
                            ({"pad_token_id": -2}, ("pad_token_id",))],
    "LogitGapMonitor": [({"tokenizer": "gpt2"}, ("tokenizer",)), ({"top_k": 0}, ("top_k",)), ({"eos_token_id": 1.5}, ("eos_token_id",)),
                        ({"eos_token_id": [-1]}, ("eos_token_id",))],
    "GapGuard": [({"policy": "block"}, ("policy",)), ({"detector": "detector.json"}, ("detector",)),
                 ({"refusal_gap_below": NAN}, ("refusal_gap_below",)), ({"eos_token_id": 1.5}, ("eos_token_id",))],
    "Chain": [],
}
#: Arguments of the input policy itself (not in older checkouts: the census leaves them out).
POLICY_ARGUMENTS = [({"on_nan": "ignore"}, ("on_nan",)), ({"on_nan": None}, ("on_nan",))]


def constructor_cases(env: Environment, name: str, *, policy_arguments: bool = True) -> list[Case]:
    extra = POLICY_ARGUMENTS if policy_arguments and name != "Chain" else []
    cases = []
    for overrides, names in BAD_ARGUMENTS[name] + extra:
        label = ", ".join(f"{k}={v!r:.30}" for k, v in overrides.items())
        cases.append(Case(name, "constructor", label, lambda o=overrides: FACTORIES[name](env, **o), "error", names))
    return cases


def chain_cases(env: Environment) -> list[Case]:
    w = env.width
    scores = scores_for(2, w)
    ids = ids_for(2, env)
    from transformers import LogitsProcessorList

    return [
        Case("Chain", "interop", "a Chain inside a LogitsProcessorList", lambda: LogitsProcessorList(
            [lp.Temperature(0.7) | lp.TopK(5), lp.LogitGapMonitor(env.tokenizer)])(ids, scores), "ok",
            inputs=(ids, scores), scores=scores),
        Case("Chain", "interop", "a member that returns None", lambda: (lp.Temperature(0.5) | (lambda i, s: None))(ids, scores),
             "error", ("processor #1", "None"), inputs=(ids, scores)),
        Case("Chain", "interop", "a member that returns a wrong shape", lambda: (
            lp.Temperature(0.5) | (lambda i, s: s[:, :10]))(ids, scores), "error", ("processor #1",), inputs=(ids, scores)),
        Case("Chain", "constructor", "a member that is not callable", lambda: lp.Chain(lp.Temperature(0.5), 3), "error",
             ("processor #1",)),
    ]


def all_cases(env: Environment, *, policy_arguments: bool = True) -> list[Case]:
    cases = []
    for name in public_processors():
        if name not in FACTORIES:
            continue
        cases += constructor_cases(env, name, policy_arguments=policy_arguments)
        cases += value_cases(env, name)
        cases += shape_cases(env, name)
        cases += unusual_valid_cases(env, name)
        cases += overflow_cases(env, name)
        cases += state_cases(env, name)
    return cases + chain_cases(env)
