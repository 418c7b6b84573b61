"""``logit-processors generate --ensemble ... / --contrastive ...`` with two tiny GPT-2 checkpoints.

The command's output must be exactly what the processors give through the Python API, and bad
flags end with one ``logit-processors: error: ...`` line (exit status 2) before any model loads.
"""

from __future__ import annotations

import pytest
import torch

from logit_processors import ContrastiveDecoding, LogOddsEnsemble, TokenMask
from logit_processors.models import load
from logit_processors.models.tiny_gpt2 import tiny_gpt2_path as build_tiny_gpt2_path

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
PROMPT = "The if statement"


@pytest.fixture(scope="module")
def paths(tiny_gpt2_path):
    return str(tiny_gpt2_path), str(build_tiny_gpt2_path(seed=1))


def api_greedy(primary_path, processor_factory, max_new_tokens=10) -> str:
    model, tokenizer = load(primary_path, progress=False)
    inputs = tokenizer([PROMPT], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, logits_processor=processor_factory(tokenizer), do_sample=False,
                             max_new_tokens=max_new_tokens)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def member(path):
    return load(path, progress=False)[0]


@pytest.mark.parametrize("combine", ["logprob", "logodds"])
def test_ensemble_flag_matches_the_api(run, paths, combine):
    primary, other = paths
    status, out, err = run("generate", PROMPT, "--model", primary, "--no-chat-template", "--greedy",
                           "--max-new-tokens", 10, "--ensemble", f"{other}:0.7", "--combine", combine,
                           "--primary-weight", 0.6)
    assert status == 0, err
    want = api_greedy(primary, lambda tok: [LogOddsEnsemble(member(other), [0.6, 0.7], combine, tokenizer=tok)])
    assert out.strip() == want.strip()
    alone = api_greedy(primary, lambda tok: [])
    assert want != alone  # the flag made a difference


def test_repeated_ensemble_flags_and_default_weight(run, paths):
    primary, other = paths
    status, out, err = run("generate", PROMPT, "--model", primary, "--no-chat-template", "--greedy",
                           "--max-new-tokens", 8, "--ensemble", other, "--ensemble", f"{primary}:-0.25")
    assert status == 0, err
    want = api_greedy(primary, lambda tok: [LogOddsEnsemble([member(other), member(primary)], [1.0, 1.0, -0.25],
                                                            tokenizer=tok)], max_new_tokens=8)
    assert out.strip() == want.strip()


def test_contrastive_flag_matches_the_api_and_runs_before_other_processors(run, paths):
    primary, other = paths
    status, out, err = run("generate", PROMPT, "--model", primary, "--no-chat-template", "--greedy",
                           "--max-new-tokens", 10, "--contrastive", other, "--alpha", 0.5, "--plausibility", 0.2,
                           "--deny", "0")
    assert status == 0, err
    want = api_greedy(primary, lambda tok: [ContrastiveDecoding(member(other), alpha=0.5, plausibility=0.2, tokenizer=tok),
                                            TokenMask(deny=[0])])
    assert out.strip() == want.strip()


def test_sampling_with_gaps_and_an_ensemble(run, paths):
    primary, other = paths
    args = ("generate", PROMPT, "--model", primary, "--no-chat-template", "--max-new-tokens", 6, "--seed", 3,
            "--ensemble", f"{other}:0.5", "--top-p", 0.9, "--gaps")
    first, second = run(*args), run(*args)
    assert first[0] == 0 and first == second  # seeded: reproducible
    assert "top gap" in first[1]


@pytest.mark.parametrize("flags, fragments", [
    (["--ensemble", "x:0.5", "--contrastive", "y"], ["either --ensemble or --contrastive"]),
    (["--combine", "logodds"], ["--combine needs --ensemble"]),
    (["--primary-weight", "2"], ["--primary-weight needs --ensemble"]),
    (["--alpha", "0.5"], ["--alpha needs --contrastive"]),
    (["--contrastive", "y", "--alpha", "-1"], ["--alpha", ">= 0"]),
    (["--contrastive", "y", "--plausibility", "2"], ["--plausibility", "[0, 1]"]),
    (["--ensemble", "x:0", "--primary-weight", "0"], ["at least one weight must be nonzero"]),
    (["--ensemble", "x:nan"], ["--ensemble", "finite"]),
    (["--combine", "mean"], ["--combine", "invalid choice"]),
])
def test_bad_flags_fail_before_loading(run, flags, fragments):
    status, out, err = run("generate", PROMPT, "--model", "/nonexistent/model", *flags)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err


def test_missing_member_is_a_one_line_error_and_another_tokenizer_is_aligned(run, paths, tmp_path, capsys):
    primary, _ = paths
    status, _, err = run("generate", PROMPT, "--model", primary, "--no-chat-template", "--ensemble", tmp_path / "none")
    assert status == 2 and "argument --ensemble" in err and len(err.strip().splitlines()) == 1
    # A copy of the tiny GPT-2 whose tokenizer has one more token: a different id mapping, so the
    # members are aligned on text rather than id by id (test_ensemble_tokenizers.py checks how).
    model, tokenizer = load(primary, progress=False)
    tokenizer.add_tokens(["<|another token|>"])
    model.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    capsys.readouterr()  # save_pretrained's progress bar
    status, _, err = run("generate", PROMPT, "--model", primary, "--no-chat-template",
                         "--contrastive", tmp_path / "other")
    assert status == 0, err


def test_help_lists_the_flags(run):
    status, out, _ = run("generate", "--help")
    assert status == 0
    for flag in ("--ensemble", "--combine", "--primary-weight", "--contrastive", "--alpha", "--plausibility"):
        assert flag in out
