"""``logit-processors calibrate`` and ``generate --calibration``, in-process, on the saved tiny GPT-2."""

from __future__ import annotations

import json

import pytest
import torch

from logit_processors import Temperature, cli
from logit_processors.calibration import CalibratedTemperature
from logit_processors.cli.processors import build_processors
from logit_processors.models import load
from logit_processors.models.tiny_gpt2 import corpus
from logit_processors.models.tiny_gpt2 import tiny_gpt2_path as build_tiny_gpt2_path
from logit_processors.runtime.generation import run_generate

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROMPT = "The if statement"


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A calibration text file and a held-out one (pydoc topics: disjoint)."""
    root = tmp_path_factory.mktemp("calibration_texts")
    documents = corpus()
    fit, heldout = root / "fit.txt", root / "heldout.txt"
    fit.write_text("\n\n".join(documents[:3]), encoding="utf-8")
    heldout.write_text("\n\n".join(documents[6:8]), encoding="utf-8")
    return fit, heldout


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_gpt2_path, texts):
    """``(path of the JSON written by calibrate, stdout, stderr)``; the command run once for the module."""
    out = tmp_path_factory.mktemp("calibration") / "calib.json"
    png = out.with_name("reliability.png")
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(["calibrate", "--model", str(tiny_gpt2_path), "--texts", str(texts[0]), "--out", str(out),
                           "--heldout", str(texts[1]), "--png", str(png), "--no-progress", "--max-length", "128"])
    assert status == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def assert_one_line_error(status, err, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("logit-processors") and "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_calibrate_writes_the_fit_of_the_library(calibrated, tiny_gpt2_path, texts):
    path, stdout, stderr = calibrated
    document = json.loads(path.read_text())
    model, tokenizer = load(tiny_gpt2_path, progress=False)
    expected = CalibratedTemperature.fit(model, tokenizer, [texts[0].read_text(encoding="utf-8")], max_length=128,
                                         progress=False)
    assert document["temperature"] == pytest.approx(expected.temperature, rel=1e-9)
    assert document["fit"]["positions"] == expected.fit_stats["positions"]
    assert f"calibrated temperature T = {expected.temperature:.4f}" in stdout
    # The held-out table: both rows, the metrics named.
    assert "held-out:" in stdout and "ECE-15 width" in stdout and f"T = {expected.temperature:.4f}" in stdout
    assert f"wrote {path}" in stderr
    assert path.with_name("reliability.png").read_bytes()[:8] == PNG_MAGIC
    CalibratedTemperature.load(path, model, tokenizer)  # the saved identity is this model's


def test_generate_with_the_calibration_samples_at_its_temperature(run, calibrated, tiny_gpt2_path):
    path, _, _ = calibrated
    temperature = json.loads(path.read_text())["temperature"]
    status, out, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--calibration", path,
                           "--max-new-tokens", 12, "--seed", 4)
    assert status == 0, err
    # The same sampling with Temperature(T) in its place: the same tokens.
    model, tokenizer = load(tiny_gpt2_path, progress=False)
    inputs = tokenizer([PROMPT], return_tensors="pt")
    expected = run_generate(model, inputs, [Temperature(temperature)], greedy=False, max_new_tokens=12, seed=4)
    text = tokenizer.decode(expected.sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.strip() == text.strip()
    # And it is applied first, before --temperature: the two temperatures multiply.
    status, out_both, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--calibration", path,
                                "--temperature", 2.0, "--max-new-tokens", 12, "--seed", 4)
    expected = run_generate(model, inputs, [Temperature(temperature * 2.0)], greedy=False, max_new_tokens=12, seed=4)
    assert out_both.strip() == tokenizer.decode(expected.sequences[0, inputs["input_ids"].shape[1]:],
                                                skip_special_tokens=True).strip()


def test_build_processors_puts_the_calibration_first(calibrated, tiny_gpt2_path):
    path, _, _ = calibrated
    args = cli.build_parser().parse_args(["generate", PROMPT, "--calibration", str(path), "--temperature", "0.5"])
    from logit_processors.cli import calibrate as calibration_cli

    calibration_cli.check_flags(args)
    _, tokenizer = load(tiny_gpt2_path, progress=False)
    processors = build_processors(args, tokenizer, 2048)
    assert isinstance(processors[0], CalibratedTemperature) and isinstance(processors[1], Temperature)


def test_a_calibration_of_another_model_is_refused(run, calibrated):
    path, _, _ = calibrated
    other = build_tiny_gpt2_path(seed=1)  # same config and tokenizer, other weights
    status, _, err = run("generate", PROMPT, "--model", other, "--calibration", path, "--max-new-tokens", 4)
    assert_one_line_error(status, err, "--calibration", "different model", "weight norm")


def test_bad_calibration_files(run, tmp_path, tiny_gpt2_path):
    missing = tmp_path / "missing.json"
    status, _, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--calibration", missing)
    assert_one_line_error(status, err, "--calibration", "No such file")
    not_json = tmp_path / "bad.json"
    not_json.write_text("{")
    status, _, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--calibration", not_json)
    assert_one_line_error(status, err, "--calibration", "invalid JSON")
    raw = tmp_path / "raw.json"
    logits = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator().manual_seed(1)).squeeze(1)
    CalibratedTemperature.fit_logits(logits, labels).save(raw)
    status, _, err = run("generate", PROMPT, "--model", tiny_gpt2_path, "--calibration", raw)
    assert_one_line_error(status, err, "--calibration", "no model identity")


def test_calibrate_usage_errors(run, tmp_path, tiny_gpt2_path, texts):
    fit, _ = texts
    status, _, err = run("calibrate", "--model", tiny_gpt2_path, "--texts", tmp_path / "nope.txt",
                         "--out", tmp_path / "c.json")
    assert_one_line_error(status, err, "--texts", "No such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    status, _, err = run("calibrate", "--model", tiny_gpt2_path, "--texts", empty, "--out", tmp_path / "c.json")
    assert_one_line_error(status, err, "--texts", "holds no text")
    status, _, err = run("calibrate", "--model", tiny_gpt2_path, "--texts", fit, "--out", tmp_path / "no" / "c.json")
    assert_one_line_error(status, err, "--out", "does not exist")
    status, _, err = run("calibrate", "--model", tiny_gpt2_path, "--texts", fit)
    assert_one_line_error(status, err, "--out")
    status, _, err = run("calibrate", "--model", tmp_path / "no-model", "--texts", fit, "--out", tmp_path / "c.json")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.json").exists()


def test_help_lists_calibrate(run):
    status, out, _ = run("--help")
    assert status == 0 and "calibrate" in out
    status, out, _ = run("generate", "--help")
    assert status == 0 and "--calibration" in out
