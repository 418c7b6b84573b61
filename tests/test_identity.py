"""Model identity: the same model (any dtype, any path) matches; another model is refused."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from logit_processors.models.identity import check_identity, identity_mismatches, model_identity


def tiny(seed: int, **config):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32, **config))


def test_same_model_matches_in_another_dtype_and_round_trips_json():
    model = tiny(0)
    saved = json.loads(json.dumps(model_identity(model)))
    check_identity(saved, model.to(torch.bfloat16))
    assert saved["weight_norms"]["input_embeddings"] > 0


def test_different_weights_same_config_are_refused():
    with pytest.raises(ValueError, match="different weights"):
        check_identity(model_identity(tiny(0)), tiny(1), what="calibration")


def test_different_config_is_refused_and_named():
    problems = identity_mismatches(model_identity(tiny(0)), model_identity(tiny(0, n_inner=32)))
    assert any("config_sha256" in p for p in problems)
    with pytest.raises(ValueError, match=r"calibration was fitted on a different model.*vocab_size 50 != 60"):
        check_identity(model_identity(tiny(0)), GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16,
                                                                           vocab_size=60, n_positions=32)),
                       what="calibration")
