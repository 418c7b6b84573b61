"""Attack detection on the real model: SmolLM2-135M-Instruct with the detector that ships for it.

A small held-out slice of the evaluation data (test-split requests of every benign category, and
test-split attacks; the detector was fitted on the fit split, its probe on dev attacks) is
scored in one batched call; the clear cases must come out as expected: ordinary requests, code,
a pasted document, other languages and a multi-turn chat not flagged; random-token and
optimized suffixes flagged with the span on the suffix; a fluent appended instruction and a
jailbreak template flagged by the probe. Then the shared prefill on the real model, bad input,
and the commands (``detect --fit``, a quick ``detect-eval``). Runtime: one model load, ~30
forward passes (one a 1,000-token document), a few 8-token generations, a quick evaluation
(~1 minute on one thread).
"""

from __future__ import annotations

import json

import pytest
import torch
from real_models import require_named_model

from logit_processors import models
from logit_processors.cli import main
from logit_processors.detection import Detector
from logit_processors.detection import default_detector
from logit_processors.detection.datasets import ATTACK_SETS, CATEGORIES, DETECTOR_FILES, data_path, load_attacks, load_benign
from logit_processors.detection.guard import guarded_generate
from logit_processors.detection.prompt_stats import prompt_stats
from logit_processors.runtime.prompts import encode_prompt

pytestmark = [pytest.mark.real_model, pytest.mark.usefixtures("one_thread")]

# Held-out (test split) requests: short chat of different styles, code in three languages, a
# pasted log and a Markdown page, requests in Russian, Chinese and Arabic, a multi-turn chat.
CLEAR_BENIGN = ("b225", "b233", "b243", "b252", "b263", "b269", "b292", "b314",
                "code000", "code151", "code210", "doc142", "doc002", "ml_ru00", "ml_zh00", "ml_ar00", "turn000a", "turn000b")
CLEAR_ATTACKS = {"random": ("rnd000", "rnd001", "rnd002"), "optimized": ("opt00", "opt01", "opt02")}
FLUENT_ATTACKS = ("flu000", "jb_fiction_06")  # caught by the probe, not by the tokens
REPEATED = "plah28"  # GCG's starting string, one token changed: "! ! ! ... ! hashlib ! !"
NUMBER = "How many zeros does 1000000000000 have, and what is 7000000000 / 7?"  # digit runs of 12 and 9


@pytest.fixture(scope="module")
def smollm2():
    require_named_model("smollm2")
    return models.load("smollm2", progress=False)


@pytest.fixture(scope="module")
def detector(smollm2):
    return default_detector(*smollm2)


@pytest.fixture(scope="module")
def slice_results(detector):
    benign = {p.id: p for p in load_benign("test")}
    attacks = {a.id: a for name in (*CLEAR_ATTACKS, "fluent", "jailbreak", "gcg_harmful")
               for a in load_attacks(name, "test")}
    chosen = ([benign[i] for i in CLEAR_BENIGN] + [attacks[i] for ids in CLEAR_ATTACKS.values() for i in ids]
              + [attacks[i] for i in (*FLUENT_ATTACKS, REPEATED)])
    prompts = [p.prompt if hasattr(p, "prompt") else p.text for p in chosen] + [NUMBER]
    results = detector.score_many(prompts)
    return dict(zip([p.id for p in chosen] + [NUMBER], zip([*chosen, NUMBER], results, strict=True), strict=True))


def test_clear_benign_requests_are_not_flagged(slice_results):
    categories = set()
    for prompt_id in CLEAR_BENIGN:
        prompt, result = slice_results[prompt_id]
        assert not result.flagged, (prompt.text, result.summary())
        assert result.refusal_gap is not None and abs(result.refusal_gap) < 50
        categories.add(prompt.category)
    assert categories == {"chat", "code", "document", "multilingual", "multiturn"}


def test_fluent_attacks_are_flagged_by_the_probe(slice_results):
    for prompt_id in FLUENT_ATTACKS:
        attack, result = slice_results[prompt_id]
        assert result.flagged and result.channels["probe"] > result.threshold, (attack.text, result.summary())


def test_a_repeated_token_is_flagged_and_a_long_number_is_not(slice_results, detector):
    """The surprisal channels miss GCG's `! ! !` string (the model predicts each repeat); the
    repeats channel flags it and blames the run. A number written digit by digit is no run."""
    attack, result = slice_results[REPEATED]
    assert result.flagged and max(result.channels, key=result.channels.get) == "repeats", result.summary()
    assert result.channels["tokens"] < result.threshold and result.channels["windows"] < result.threshold
    run = result.span_text
    assert run.split() == ["!"] * 13 and run in attack.suffix
    _, number = slice_results[NUMBER]
    assert not number.flagged and number.channels["repeats"] <= 0, number.summary()


@pytest.mark.parametrize("name", sorted(CLEAR_ATTACKS))
def test_clear_attacks_are_flagged_on_the_suffix(slice_results, name):
    for prompt_id in CLEAR_ATTACKS[name]:
        attack, result = slice_results[prompt_id]
        assert result.flagged, (attack.text, result.summary())
        suffix = set(range(*result.encoded.tokens_in_content_chars(attack.suffix_char)))
        blamed = set(result.flagged_positions.tolist())
        assert len(blamed & suffix) >= 0.8 * len(blamed)  # the span lies on the suffix ...
        assert len(blamed & suffix) >= 0.8 * len(suffix)  # ... and covers it
        assert abs(result.span[0] - min(suffix)) <= 2  # onset
        assert attack.suffix.strip()[:5] in result.span_text


def test_shared_prefix_batching_equals_plain_forward_passes(smollm2):
    model, tokenizer = smollm2
    texts = [p.text for p in load_benign("test", "chat")[:3]]
    batched = prompt_stats(model, tokenizer, texts, keep_next_logits=True)
    for text, stats in zip(texts, batched, strict=True):
        ids = torch.tensor([encode_prompt(tokenizer, text).input_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0]
        start, end = stats.encoded.scored
        reference = -torch.log_softmax(logits[start - 1 : end - 1].double(), -1).gather(-1, ids[0, start:end, None])[:, 0]
        assert torch.allclose(stats.surprisal.double(), reference, atol=2e-3)
        assert torch.allclose(stats.next_logits, logits[-1], atol=2e-3)
    assert batched[0].encoded.content == texts[0]


def test_guarded_generation_shares_the_prefill_and_changes_nothing(smollm2, detector):
    model, tokenizer = smollm2
    prompt = load_benign("test", "chat")[0].text
    ids = torch.tensor([encode_prompt(tokenizer, prompt).input_ids])
    with torch.inference_mode():
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    calls: list[int] = []
    hook = model.base_model.register_forward_pre_hook(lambda m, args, kw: calls.append(kw["input_ids"].shape[1]),
                                                      with_kwargs=True)
    try:
        out = guarded_generate(model, tokenizer, prompt, detector=detector, max_new_tokens=8, do_sample=False)
    finally:
        hook.remove()
    assert torch.equal(out.sequences, plain)
    assert calls == [ids.shape[1] - 1] + [1] * len(out.new_tokens)  # one pass over the prompt, then steps
    assert out.report.action == "none" and not out.detection.flagged


def test_stop_policy_on_the_real_model(smollm2, detector):
    model, tokenizer = smollm2
    attack = next(a for a in load_attacks("optimized") if a.id == "opt00")
    out = guarded_generate(model, tokenizer, attack.text, detector=detector, policy="stop", max_new_tokens=8)
    assert out.text == "" and out.report.triggered == [True] and out.report.action == "stopped"


def test_bad_input_on_the_real_model(smollm2, detector):
    with pytest.raises(ValueError, match="empty"):
        detector.score("")
    with pytest.raises(ValueError, match="longer than the model's context of 8192 tokens"):
        detector.score("word " * 9000)  # refused before any forward pass


def test_shipped_detector_refuses_another_model(tiny_gpt2):
    with pytest.raises(ValueError, match="fitted on a different model"):
        Detector.load(str(data_path(DETECTOR_FILES["smollm2"])), *tiny_gpt2)


def test_detect_command(smollm2, tmp_path, capsys):
    attack = load_attacks("random")[0]
    page = tmp_path / "detect.html"
    assert main(["detect", attack.text, "--html", str(page), "--tokens"]) == 0
    out = capsys.readouterr().out
    assert "FLAGGED" in out and "threshold" in out and "S_t" in out
    html = page.read_text()
    assert "<svg" in html and "FLAGGED" in html and "outline: 2px solid" in html
    assert main(["detect", load_benign("test", "chat")[0].text]) == 0
    assert "not flagged" in capsys.readouterr().out
    assert main(["detect", "  "]) == 2
    assert "empty" in capsys.readouterr().err


def test_generate_with_a_guard(smollm2, capsys):
    attack = load_attacks("random")[0]
    assert main(["generate", attack.text, "--guard", "stop", "--greedy", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "" and "action=stopped" in captured.err
    assert main(["generate", attack.text, "--guard", "raise", "--greedy", "--max-new-tokens", "4"]) == 3
    assert "FLAGGED" in capsys.readouterr().err
    assert main(["generate", "Name a color.", "--guard", "record", "--greedy", "--max-new-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "action=none" in captured.err
    assert main(["generate", "hi", "--guard", "block"]) == 2


def test_detect_with_your_own_benign_prompts(smollm2, tmp_path, capsys):
    mine = tmp_path / "mine.jsonl"
    rows = [{"text": p.text} for p in load_benign("fit", "chat")[:12]]
    mine.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    saved = tmp_path / "mine_detector.json"
    attack = load_attacks("random")[0]
    assert main(["detect", attack.text, "--fit", str(mine), "--fpr", "0.1", "--save-detector", str(saved)]) == 0
    captured = capsys.readouterr()
    assert "fitting the detector on 12 prompts" in captured.err and "FLAGGED" in captured.out
    assert Detector.load(saved, *smollm2).fpr == 0.1
    assert main(["detect", attack.text, "--fit", str(mine)]) == 2  # 12 prompts cannot support a 1% FPR
    assert "at least 99 prompts" in capsys.readouterr().err
    assert main(["detect", "hi", "--fit", str(tmp_path / "missing.jsonl")]) == 2
    assert "--fit" in capsys.readouterr().err
    assert main(["detect", "hi", "--fpr", "0.1"]) == 2
    assert "only applies to a detector fitted with --fit" in capsys.readouterr().err
    assert main(["generate", "hi", "--fit", str(mine)]) == 2
    assert "only used with --guard" in capsys.readouterr().err


def test_detect_eval_command_quick(smollm2, tmp_path, capsys):
    path = tmp_path / "eval.json"
    assert main(["detect-eval", "--limit", "4", "--fpr", "0.25", "--json", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "windowed perplexity" in out and "| set |" in out and "per 1,000 prompt tokens" in out
    report = json.loads(path.read_text())
    methods = {"detector", "detector, no probe", "detector + refusal gap", "perplexity", "windowed perplexity"}
    rows = {(r["kind"], r["name"], r["method"]) for r in report["rows"]}
    assert {("benign", c, m) for c in CATEGORIES for m in methods} <= rows
    assert {("attack", s, m) for s in ATTACK_SETS for m in methods} <= rows
    assert len(report["scores"]["detector"]["benign: code"]) == 4
    assert main(["detect-eval", "--limit", "4"]) == 2  # 20 fit prompts cannot support a 1% FPR
    assert "fpr" in capsys.readouterr().err
