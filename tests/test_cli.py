"""The ``logit-processors`` command, run in-process through ``cli.main([...])``.

Most tests point ``--model`` at the saved tiny GPT-2 (no chat template: the raw prompt is used);
the ``real_model`` ones run the default embedded SmolLM2-135M-Instruct end to end.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from real_models import require_named_model

from logit_processors import Temperature, TopK
from logit_processors.gaps import Trace, token_stats
from logit_processors.models import load
from logit_processors.runtime.generation import SAMPLING_WARPER_FIELDS, neutral_sampling_settings, run_generate

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The if statement"
TEXT = "The with statement is used to wrap the execution of a block."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_path):
    """``(path, model, tokenizer)`` loaded the way the command loads it."""
    model, tokenizer = load(tiny_gpt2_path, progress=False)
    return str(tiny_gpt2_path), model, tokenizer


def greedy_reference(model, tokenizer, prompt, max_new_tokens, processors=()):
    inputs = tokenizer([prompt], return_tensors="pt")
    out = model.generate(**inputs, logits_processor=list(processors), do_sample=False, max_new_tokens=max_new_tokens)
    return out[0, inputs["input_ids"].shape[1]:]


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("logit-processors") and "error:" in lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# --------------------------------------------------------------------------------------------
# The command itself


def test_module_help_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "logit_processors", "--help"], check=False, capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: logit-processors")
    for command in ("generate", "inspect", "models"):
        assert command in result.stdout


def test_console_script_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["logit-processors"] == "logit_processors.cli:main"
    assert any(dep.startswith("rich") for dep in project["dependencies"])
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["plot"])


def test_help_and_version(run):
    status, out, _ = run("generate", "--help")
    assert status == 0
    for flag in ("--model", "--dtype", "--device", "--temperature", "--entropy-temperature", "--top-k", "--top-p",
                 "--min-p", "--deny", "--ban", "--max-new-tokens", "--seed", "--greedy", "--no-chat-template",
                 "--gaps", "--html", "--png", "--json", "--color-by"):
        assert flag in out
    status, out, _ = run("inspect", "--help")
    assert status == 0 and "--prompt" in out
    status, out, _ = run("--version")
    assert status == 0 and out.startswith("logit-processors ")


def test_models_lists_the_named_models(run):
    status, out, _ = run("models")
    assert status == 0 and "smollm2" in out and "gemma3-270m" in out


# --------------------------------------------------------------------------------------------
# generate


@pytest.mark.integration
def test_generate_greedy_is_deterministic_and_matches_generate(run, tiny):
    path, model, tokenizer = tiny
    status, out, err = run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 10)
    assert status == 0, err
    assert err == ""  # quiet: no progress bars, no transformers warnings
    expected = tokenizer.decode(greedy_reference(model, tokenizer, PROMPT, 10), skip_special_tokens=True)
    assert out == expected + "\n"
    assert run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 10)[1] == out


@pytest.mark.integration
def test_generate_ban_removes_the_phrase(run, tiny):
    path, _, _ = tiny
    _, plain, _ = run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 12)
    word = re.search(r"[A-Za-z]{2,}", plain).group(0)
    status, banned, err = run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 12, "--ban", word)
    assert status == 0, err
    assert re.search(rf"\b{word}\b", plain) and not re.search(rf"\b{word}\b", banned), (word, plain, banned)


def generated_ids(json_path: Path) -> list[int]:
    (seq,) = Trace.load_json(json_path)
    return seq.token_ids.tolist()


@pytest.mark.integration
def test_generate_deny_ids_and_words(run, tiny, tmp_path):
    path, _, tokenizer = tiny
    common = ("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 8)
    assert run(*common, "--json", tmp_path / "plain.json")[0] == 0
    plain = generated_ids(tmp_path / "plain.json")
    first = plain[0]
    status, _, err = run(*common, "--deny", f"{first},{tokenizer.eos_token_id}", "--json", tmp_path / "ids.json")
    assert status == 0, err
    denied = generated_ids(tmp_path / "ids.json")
    assert first not in denied and tokenizer.eos_token_id not in denied

    word = tokenizer.decode([first]).strip()  # e.g. " is" -> "is": denies "is" and " is"
    assert run(*common, "--deny", f"{word},{tokenizer.eos_token_id}", "--json", tmp_path / "word.json")[0] == 0
    spellings = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize(word) + tokenizer.tokenize(" " + word)}
    assert first in spellings and not spellings & set(generated_ids(tmp_path / "word.json"))
    assert tokenizer.eos_token_id not in generated_ids(tmp_path / "word.json")


@pytest.mark.integration
def test_generate_gaps_prints_the_table_of_generated_tokens(run, tiny, tmp_path):
    path, model, tokenizer = tiny
    status, out, err = run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 6, "--gaps",
                           "--json", tmp_path / "g.json")
    assert status == 0, err
    assert "wrote" in err and "g.json" in err
    _, table = out.split("\n", 1)
    assert "surprisal" in table and "top gap" in table and "chosen gap" in table
    (seq,) = Trace.load_json(tmp_path / "g.json")
    assert len(seq) == 6
    # The monitor sees the model's own distribution: its statistics equal teacher forcing's.
    prompt = tokenizer(PROMPT)["input_ids"]
    teacher = token_stats(model, tokenizer, [prompt + seq.token_ids.tolist()])[0]
    for name in ("surprisal", "top_gap", "chosen_gap", "entropy"):
        assert torch.allclose(getattr(seq, name), getattr(teacher, name)[len(prompt):], atol=1e-4), name
    assert seq.rank.tolist() == [0] * 6  # greedy


@pytest.mark.integration
def test_generate_sampling_with_seed_is_reproducible(run, tiny):
    path, _, _ = tiny
    args = ("generate", PROMPT, "--model", path, "--max-new-tokens", 12, "--seed", 3, "--temperature", 0.9,
            "--top-p", 0.95, "--min-p", 0.01, "--top-k", 100, "--entropy-temperature", "0.5:1.5")
    first, second = run(*args), run(*args)
    assert first[0] == 0 and first[1] == second[1], first[2]


# --------------------------------------------------------------------------------------------
# Hugging Face's own warpers stay off


@pytest.fixture(scope="module")
def sampling_config_model(tiny_gpt2_path, tmp_path_factory):
    """A copy of the tiny GPT-2 whose generation_config asks for aggressive sampling warpers."""
    model, tokenizer = load(tiny_gpt2_path, progress=False)
    config = model.generation_config
    config.do_sample, config.temperature, config.top_k, config.top_p = True, 0.05, 2, 0.3
    config.min_p, config.typical_p = 0.5, 0.5
    path = tmp_path_factory.mktemp("sampling-config-gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.integration
def test_generation_config_adds_no_warpers(sampling_config_model):
    model, tokenizer = load(sampling_config_model, progress=False)
    assert model.generation_config.top_k == 2  # the config does ask for warpers
    inputs = dict(tokenizer([PROMPT], return_tensors="pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and asking them off warns about nothing
        out = run_generate(model, inputs, [Temperature(0.7)], greedy=False, max_new_tokens=6, seed=0,
                               output_scores=True, output_logits=True)
    # The scores tokens were drawn from are exactly our processors applied to the raw logits:
    # no temperature 0.05, top-k 2, top-p, min-p or typical-p from the config, no global top_k=50.
    assert len(out.scores) == 6
    for logits, scores in zip(out.logits, out.scores, strict=True):
        assert torch.equal(scores, logits / 0.7)
        assert torch.isfinite(scores).all()


@pytest.mark.integration
def test_generation_config_does_not_change_the_command(run, tiny, sampling_config_model):
    path, _, _ = tiny
    args = ("generate", PROMPT, "--max-new-tokens", 12, "--seed", 0, "--top-k", 200)
    status, clean, err = run(*args, "--model", path)
    assert status == 0, err
    assert run(*args, "--model", sampling_config_model)[1] == clean
    # Sampling really happened: with the config's warpers it would have been (nearly) greedy.
    assert run("generate", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 12)[1] != clean


def test_neutral_settings_cover_every_warper_field():
    from transformers import GenerationConfig

    settings = neutral_sampling_settings()
    assert set(settings) == {f for f in SAMPLING_WARPER_FIELDS if hasattr(GenerationConfig(), f)}
    assert {"temperature", "top_k", "top_p"} <= set(settings) and set(settings.values()) == {None}


@pytest.mark.integration
def test_greedy_with_processors_equals_plain_greedy_with_the_same_processors(tiny):
    _, model, tokenizer = tiny
    inputs = dict(tokenizer([PROMPT], return_tensors="pt"))
    ours = run_generate(model, inputs, [TopK(5)], greedy=True, max_new_tokens=8).sequences
    reference = greedy_reference(model, tokenizer, PROMPT, 8, [TopK(5)])
    assert torch.equal(ours[0, inputs["input_ids"].shape[1]:], reference)


# --------------------------------------------------------------------------------------------
# inspect


class SpanCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.spans, self._open = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "data-i" in attrs:
            self._open = {"classes": attrs["class"].split(), "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.spans.append(self._open)
            self._open = None


def spans_of(path: Path) -> list[dict]:
    collector = SpanCollector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector.spans


@pytest.mark.integration
def test_inspect_text_writes_html_png_and_json(run, tiny, tmp_path):
    path, model, tokenizer = tiny
    files = {kind: tmp_path / f"trace.{kind}" for kind in ("html", "png", "json")}
    status, out, err = run("inspect", TEXT, "--model", path, "--color-by", "top_gap",
                           *(x for kind, f in files.items() for x in (f"--{kind}", f)))
    assert status == 0, err
    expected = token_stats(model, tokenizer, TEXT)
    tokens = expected[0].tokens

    # JSON: round-trips, and holds exactly token_stats' statistics of the same text.
    trace = Trace.load_json(files["json"])
    assert trace[0].token_ids.tolist() == expected[0].token_ids.tolist() and trace[0].tokens == tokens
    for name in ("top_gap", "chosen_gap", "surprisal", "entropy", "rank", "top_ids", "top_logprobs"):
        assert torch.equal(getattr(trace[0], name).nan_to_num(), getattr(expected[0], name).nan_to_num()), name

    # HTML: parses, one span per token, escaped, with the alternatives in its data.
    page = files["html"].read_text(encoding="utf-8")
    spans = spans_of(files["html"])
    assert [s["text"] for s in spans] == [t if t.strip() else t.replace(" ", "␣") for t in tokens]
    data = json.loads(re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.DOTALL)[1])
    assert [len(d["alts"]) for d in data] == [0] + [5] * (len(tokens) - 1)
    assert data[1]["alts"][0]["p"] == pytest.approx(math.exp(expected.records()[1]["alternatives"][0]["logprob"]))
    assert '<option value="top_gap" selected>' in page

    assert files["png"].read_bytes()[:8] == PNG_MAGIC
    # The table: one row per token, every token shown.
    assert "colored by top gap" in out
    for token in tokens:
        assert token.replace(" ", "␣") in out


@pytest.mark.integration
def test_inspect_prompt_scores_prompt_and_output(run, tiny, tmp_path):
    path, model, tokenizer = tiny
    status, out, err = run("inspect", "--prompt", PROMPT, "--model", path, "--greedy", "--max-new-tokens", 5,
                           "--json", tmp_path / "p.json", "--html", tmp_path / "p.html")
    assert status == 0, err
    generated = greedy_reference(model, tokenizer, PROMPT, 5)
    text = tokenizer.decode(generated, skip_special_tokens=True)
    assert out.startswith(text + "\n")
    prompt = tokenizer(PROMPT)["input_ids"]
    (seq,) = Trace.load_json(tmp_path / "p.json")
    assert seq.token_ids.tolist() == prompt + generated.tolist()
    assert seq.rank.tolist()[len(prompt):] == [0] * 5
    parts = [[c for c in s["classes"] if c != "tok"] for s in spans_of(tmp_path / "p.html")]
    assert parts == [["prompt"]] * len(prompt) + [["output"]] * 5
    assert "prompt tokens above the rule" in out and "├" in out


@pytest.mark.integration
def test_inspect_reads_stdin_and_can_skip_the_table(run, tiny, tmp_path, monkeypatch):
    path, _, _ = tiny
    monkeypatch.setattr(sys, "stdin", io.StringIO(TEXT))
    status, out, err = run("inspect", "-", "--model", path, "--no-table", "--json", tmp_path / "s.json")
    assert status == 0 and out == "", err
    assert len(Trace.load_json(tmp_path / "s.json")[0]) > 5


# --------------------------------------------------------------------------------------------
# Errors: one line on stderr, exit status 2


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--top-p", "1.5"), ("--top-p", "1.5")),
        (("--temperature", "0"), ("--temperature",)),
        (("--temperature", "nan"), ("--temperature",)),
        (("--entropy-temperature", "2"), ("--entropy-temperature", "MIN:MAX")),
        (("--entropy-temperature", "2:1"), ("--entropy-temperature", "max_t")),
        (("--top-k", "0"), ("--top-k",)),
        (("--top-k", "two"), ("--top-k",)),
        (("--min-p", "-0.1"), ("--min-p",)),
        (("--max-new-tokens", "0"), ("--max-new-tokens",)),
        (("--color-by", "rank"), ("--color-by",)),
        (("--no-such-flag",), ("--no-such-flag",)),
    ],
)
def test_bad_flag_values(run, args, fragments):
    # --model points nowhere: flag values are checked before the model is loaded.
    status, out, err = run("generate", "hello", "--model", "./no/such/model", *args)
    assert_one_line_error(status, err, *fragments)
    assert out == ""


@pytest.mark.parametrize(
    ("model", "fragment"),
    [("./no/such/model", "no such local directory"), ("smolm2", "did you mean 'smollm2'"),
     ("not a model!", "not a Hugging Face hub id")],
)
def test_unknown_model(run, model, fragment):
    assert_one_line_error(*run("generate", "hello", "--model", model)[::2], fragment)
    assert_one_line_error(*run("inspect", "hello", "--model", model)[::2], fragment)


def test_bad_dtype_and_device(run, tiny_gpt2_path):
    assert_one_line_error(*run("inspect", "x", "--model", tiny_gpt2_path, "--dtype", "int8")[::2], "dtype")
    assert_one_line_error(*run("inspect", "x", "--model", tiny_gpt2_path, "--device", "nonsense")[::2], "device")


@pytest.mark.integration
def test_tokenizer_dependent_errors(run, tiny):
    path, _, _ = tiny
    status, _, err = run("generate", PROMPT, "--model", path, "--deny", "xyzzyplugh")
    assert_one_line_error(status, err, "--deny", "not a single token", "--ban")
    assert_one_line_error(*run("generate", PROMPT, "--model", path, "--deny", "999999")[::2], "--deny", "999999")
    assert_one_line_error(*run("generate", PROMPT, "--model", path, "--deny", "1,,2")[::2], "--deny", "empty item")
    assert_one_line_error(*run("generate", "", "--model", path)[::2], "no tokens")


def test_inspect_usage_errors(run, tiny_gpt2_path):
    assert_one_line_error(*run("inspect", "--model", tiny_gpt2_path)[::2], "TEXT or --prompt")
    assert_one_line_error(*run("inspect", "x", "--prompt", "y", "--model", tiny_gpt2_path)[::2], "TEXT or --prompt")
    assert_one_line_error(*run("inspect", "x", "--top-k", "3", "--model", tiny_gpt2_path)[::2], "--top-k", "--prompt")
    assert_one_line_error(*run()[::2], "COMMAND")


def test_unwritable_output_fails_before_generating(run, tiny_gpt2_path, tmp_path):
    status, out, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--html", tmp_path / "missing" / "x.html")
    assert_one_line_error(status, err, "--html", "does not exist")
    assert out == ""


def test_png_without_matplotlib(run, tiny_gpt2_path, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    status, out, err = run("inspect", "x", "--model", tiny_gpt2_path, "--png", tmp_path / "x.png")
    assert_one_line_error(status, err, "pip install matplotlib")
    assert out == "" and not (tmp_path / "x.png").exists()


def test_errors_in_a_subprocess_have_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "logit_processors", "generate", "hi", "--model", "./no/such/model"],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert_one_line_error(result.returncode, result.stderr, "no such local directory")


# --------------------------------------------------------------------------------------------
# The default model, end to end


def _require_smollm2():
    require_named_model("smollm2")


@pytest.mark.real_model
def test_real_model_generate_and_ban(run):
    _require_smollm2()
    question = "What is the capital of France?"
    status, out, err = run("generate", question, "--greedy", "--max-new-tokens", 12)
    assert status == 0, err
    assert "Paris" in out
    status, banned, err = run("generate", question, "--greedy", "--max-new-tokens", 12, "--ban", "Paris")
    assert status == 0, err
    assert "Paris" not in banned and banned.strip()


@pytest.mark.real_model
def test_real_model_inspect_prompt(run, tmp_path):
    _require_smollm2()
    status, out, err = run("inspect", "--prompt", "What is the capital of France?", "--max-new-tokens", 12,
                           "--greedy", "--json", tmp_path / "t.json", "--html", tmp_path / "t.html",
                           "--png", tmp_path / "t.png")
    assert status == 0, err
    assert "Paris" in out.splitlines()[0]
    (seq,) = Trace.load_json(tmp_path / "t.json")
    assert seq.tokens[0] == "<|im_start|>"  # the chat template was applied
    assert "Paris" in "".join(seq.tokens) and "<|im_start|>" in out
    parts = [s["classes"][-1] for s in spans_of(tmp_path / "t.html")]
    assert parts[0] == "prompt" and parts[-1] == "output"
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC
