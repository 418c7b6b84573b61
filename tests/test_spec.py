"""Processor specs: every stateless processor round-trips exactly (same scores), through JSON text
too; bad and oversized specs raise a SpecError naming the field; text is bound to the tokenizer of
whoever builds the spec; the CLI's --processors FILE.json gives the same tokens as the flags."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from logit_processors import (
    CalibratedTemperature,
    Chain,
    EntropyTemperature,
    LogitGapMonitor,
    MinP,
    PhraseBan,
    Temperature,
    TokenMask,
    TopK,
    TopP,
    VocabFilter,
    from_spec,
    to_spec,
)
from logit_processors.processors import TextPredicate
from logit_processors.spec import KINDS, SpecError, SpecLimits, check_spec

V = 2048  # the tiny GPT-2's tokenizer (its LM head is padded to more columns)


def processors_without_text() -> list:
    return [
        Temperature(0.7),
        Temperature(torch.tensor([0.5, 2.0])),
        Temperature(1e-6),
        EntropyTemperature(0.5, 1.5, exponent=2.0),
        TopK(5),
        TopK(3, min_tokens_to_keep=4, on_empty="keep_eos", eos_token_id=[1, 2]),
        TopP(0.9),
        TopP(0.3, min_tokens_to_keep=2, on_nan="pass"),
        MinP(0.05),
        TokenMask(deny=[0, 5, 7]),
        TokenMask(allow=list(range(40)), deny=[3], vocab_size=V),
        TokenMask(deny=torch.arange(V) % 3 == 0),
        TokenMask(allow=torch.rand(2, V, generator=torch.Generator().manual_seed(0)) < 0.5),
        PhraseBan.from_token_ids([[4], [1, 2, 3], [2, 5]]),
        CalibratedTemperature(1.25, columns=V + 64, identity={"name_or_path": "tiny"}, fit={"nll": 2.5}),
    ]


def processors_with_text(tokenizer) -> list:
    return [
        PhraseBan(["the if statement", "Python"], tokenizer),
        PhraseBan(["with"], tokenizer, variants=False, case_variants=True, on_empty="keep_eos"),
        VocabFilter(tokenizer, str.isascii),
        VocabFilter(tokenizer, TextPredicate("isdigit", strip=True), keep_special_tokens=False, on_empty="keep_eos"),
        VocabFilter(tokenizer, TextPredicate(chars="abcdefgh ")),
    ]


def assert_same_scores(a, b, columns: int, rows: int = 2, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 8, (rows, 6), generator=generator)
    ids[0, -2:] = torch.tensor([1, 2])  # row 0 ends in a banned prefix
    scores = 4 * torch.randn(rows, columns, generator=generator)
    expected, got = a(ids, scores.clone()), b(ids, scores.clone())
    assert torch.equal(expected, got)


@pytest.mark.parametrize("index", range(len(processors_without_text())))
def test_every_stateless_processor_round_trips_exactly(index):
    processor = processors_without_text()[index]
    spec = to_spec(processor)
    text = json.dumps(spec, allow_nan=False)  # JSON-serialisable, no NaN or Infinity
    for rebuilt in (from_spec(spec), from_spec(text), from_spec(json.loads(text))):
        assert type(rebuilt) is type(processor)
        assert to_spec(rebuilt) == spec
        assert_same_scores(processor, rebuilt, V + 64)


def test_text_processors_round_trip_bound_to_the_tokenizer(tiny_gpt2):
    _, tokenizer = tiny_gpt2
    for processor in processors_with_text(tokenizer):
        spec = to_spec(processor)
        assert "phrases" in spec or "predicate" in spec  # text stays text, never ids
        rebuilt = from_spec(json.dumps(spec), tokenizer=tokenizer)
        assert to_spec(rebuilt) == spec
        assert_same_scores(processor, rebuilt, V + 64)
        with pytest.raises(SpecError, match="pass it, from_spec"):
            from_spec(spec)


def test_a_chain_round_trips_and_every_kind_is_covered(tiny_gpt2):
    _, tokenizer = tiny_gpt2
    chain = Chain(
        PhraseBan(["the if statement"], tokenizer), VocabFilter(tokenizer, str.isascii), TokenMask(deny=[0, 5, 7]),
        PhraseBan.from_token_ids([[1, 2, 3]]), CalibratedTemperature(1.1, columns=V + 64), Temperature(0.7),
        EntropyTemperature(0.5, 1.5), TopK(50), TopP(0.9), MinP(0.05),
    )
    spec = to_spec(chain)
    assert {step["type"] for step in spec["processors"]} == set(KINDS)
    rebuilt = from_spec(spec, tokenizer=tokenizer)
    assert isinstance(rebuilt, Chain) and len(rebuilt) == len(chain)
    assert_same_scores(chain, rebuilt, V + 64)
    assert to_spec(list(chain)) == spec  # a plain list is a chain too


@given(t=st.floats(1e-3, 1e3), k=st.integers(1, 64), p=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_round_trip_property(t, k, p, seed):
    chain = Temperature(t) | TopK(k) | TopP(p) | MinP(p / 2)
    assert_same_scores(chain, from_spec(json.dumps(to_spec(chain))), 97, rows=3, seed=seed)


def test_defaults_are_left_out():
    assert to_spec(TopK(5)) == {"type": "top_k", "k": 5}
    assert to_spec(PhraseBan.from_token_ids([[1, 2]])) == {"type": "phrase_ban", "token_ids": [[1, 2]]}


@pytest.mark.parametrize("processor, match", [
    (LogitGapMonitor(), "LogitGapMonitor cannot be written as a spec"),
    (Chain(TopK(2), LogitGapMonitor()), r"processors\[1\]: LogitGapMonitor"),
])
def test_what_has_no_spec_is_named(processor, match):
    with pytest.raises(SpecError, match=match):
        to_spec(processor)


def test_a_lambda_predicate_has_no_spec(tiny_gpt2):
    _, tokenizer = tiny_gpt2
    with pytest.raises(SpecError, match=r"spec \(vocab_filter\).predicate: .*cannot be written down; use .*TextPredicate"):
        to_spec(VocabFilter(tokenizer, lambda s: s.isdigit()))


@pytest.mark.parametrize("spec, match", [
    ("{not json", r"^spec: not valid JSON"),
    ('{"type": "temperature", "temperature": NaN}', "NaN is not a JSON number"),
    (42, "must be a JSON object"),
    ({"procesors": []}, r"must hold \"processors\""),
    ({"processors": {"type": "top_k"}}, r"^processors: must be a list"),
    ({"processors": ["top_k"]}, r"processors\[0\]: must be an object"),
    ({"type": "top_q", "p": 0.9}, r"spec.type: unknown processor type 'top_q'; known: temperature"),
    ({"type": "top_k"}, r"spec \(top_k\).k: is required"),
    ({"type": "top_k", "k": 5, "kk": 1}, r"spec \(top_k\).kk: unknown field; top_k takes k, min_tokens_to_keep"),
    ({"type": "top_k", "k": "5"}, r"spec \(top_k\): k must be a positive integer; got '5'"),
    ({"type": "temperature", "temperature": 0}, "temperature must be a positive finite number"),
    ({"type": "temperature", "temperature": True}, "temperature must be a positive finite number"),
    ({"processors": [{"type": "top_k", "k": 1}, {"type": "top_p", "p": 2}]}, r"processors\[1\] \(top_p\): p must"),
    ({"type": "token_mask", "deny": [-1]}, "negative token ids"),
    ({"type": "token_mask", "deny": [1 << 40]}, r"spec \(token_mask\).deny: .* larger than any vocabulary"),
    ({"type": "token_mask", "allow": [[1], [2]]}, "per-row lists need vocab_size"),
    ({"type": "token_mask", "deny": [1], "vocab_size": 1 << 40}, r"\.vocab_size: .* larger than any vocabulary"),
    ({"type": "phrase_ban", "token_ids": [[1]], "phrases": ["a"]}, "exactly one of phrases"),
    ({"type": "phrase_ban", "token_ids": [[1]], "variants": False}, "apply to phrases"),
    ({"type": "phrase_ban", "phrases": "Paris"}, "phrases must be a non-empty list of strings"),
    ({"type": "phrase_ban", "phrases": [""]}, r"phrases\[0\] is the empty string"),
    ({"type": "vocab_filter", "predicate": "isascii"}, r"predicate: must be an object"),
    ({"type": "vocab_filter", "predicate": {"test": "isfoo"}}, "test must be one of"),
    ({"type": "vocab_filter", "predicate": {"test": "isascii", "regex": "."}}, r"unknown field\(s\) \['regex'\]"),
    ({"type": "top_k", "k": 2, "on_empty": "keep_eos"}, "keep_eos\" needs eos_token_id"),
    ({"type": "calibrated_temperature", "temperature": 1.1, "model": [1]}, r"\.model: must be a JSON object"),
])
def test_bad_specs_name_the_field(spec, match):
    with pytest.raises(SpecError, match=match):
        check_spec(spec)


@pytest.mark.parametrize("spec, match", [
    ({"type": "phrase_ban", "phrases": ["x"] * 100_000}, r"\.phrases: 100,000 phrases; at most 1,000 .*SpecLimits.phrases"),
    ({"type": "phrase_ban", "phrases": ["x" * 10_000]}, r"\.phrases\[0\]: 10,000 characters; .*phrase_chars"),
    ({"type": "phrase_ban", "token_ids": [[1]] * 20_000}, r"SpecLimits.sequences"),
    ({"type": "phrase_ban", "token_ids": [list(range(100))]}, r"SpecLimits.sequence_length"),
    ({"type": "token_mask", "deny": list(range(300_000))}, r"300,000 token ids; .*SpecLimits.token_ids"),
    ({"processors": [{"type": "top_k", "k": 1}] * 65}, r"^processors: 65 steps; at most 64 .*SpecLimits.processors"),
    ({"type": "temperature", "temperature": [1.0] * 2000}, r"SpecLimits.rows"),
    ({"type": "calibrated_temperature", "temperature": 1.1, "fit": {"x": "y" * 100_000}}, r"\.fit: .*metadata_bytes"),
    (" " * (9 << 20), r"^spec: .* bytes of JSON; .*SpecLimits.json_bytes"),
])
def test_oversized_specs_name_the_field_and_the_cap(spec, match):
    with pytest.raises(SpecError, match=match):
        check_spec(spec)


def test_limits_can_be_raised_or_lifted():
    spec = {"type": "phrase_ban", "token_ids": [[1, i] for i in range(20_000)]}
    assert isinstance(from_spec(spec, limits=None), PhraseBan)
    assert isinstance(from_spec(spec, limits=SpecLimits(sequences=20_000)), PhraseBan)


def test_check_spec_needs_no_tokenizer_and_returns_the_chain_form():
    spec = [{"type": "phrase_ban", "phrases": ["Paris"]}, {"type": "top_p", "p": 0.9}]
    assert check_spec(json.dumps(spec)) == {"processors": spec}


def test_the_calibration_still_refuses_another_model():
    calibration = from_spec({"type": "calibrated_temperature", "temperature": 1.2, "columns": 10})
    with pytest.raises(ValueError, match="different model"):
        calibration(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 11))


def test_cli_processors_file_gives_the_same_tokens_as_the_flags(run, tmp_path, tiny_gpt2_path):
    spec = {"processors": [{"type": "phrase_ban", "phrases": ["the"]}, {"type": "temperature", "temperature": 0.7},
                           {"type": "top_k", "k": 20}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    common = ["generate", "The if statement", "--model", tiny_gpt2_path, "--seed", "3", "--max-new-tokens", "12"]
    status, from_file, err = run(*common, "--processors", path)
    assert status == 0, err
    status, from_flags, err = run(*common, "--ban", "the", "--temperature", "0.7", "--top-k", "20")
    assert status == 0, err
    assert from_file == from_flags


def test_cli_bad_processors_file_is_one_line(run, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"type": "top_p", "p": 3}')
    status, _, err = run("generate", "hi", "--processors", path)
    assert status == 2
    assert err.strip() == f"logit-processors generate: error: argument --processors: {path}: spec (top_p): p must be a number in [0, 1]; got 3.0"
