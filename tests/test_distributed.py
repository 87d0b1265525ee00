"""Scale-out: training with torch distributed, here as 2 CPU processes on the gloo backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import stsb_rows, write_csv

from refit.config import DataSpec, TrainingConfig
from refit.records import ModelVersion
from refit.registry import now
from refit.tasks.evaluate import evaluate_model
from refit.tasks.fine_tune import fine_tune
from refit.tasks.validate_data import load_eval_set, validate_training_data

pytestmark = pytest.mark.slow


def test_two_processes_take_part_and_match_one_process(tiny_model, tmp_path):
    data = validate_training_data(
        DataSpec(
            path=str(write_csv(tmp_path / "d.csv", stsb_rows("train", 320))), score_range=(0, 5)
        ),
        "new",
        tmp_path / "clean.parquet",
    )
    test, _ = load_eval_set(
        DataSpec(
            path=str(write_csv(tmp_path / "t.csv", stsb_rows("test", 200))), score_range=(0, 5)
        ),
        tmp_path / "eval",
    )
    parent = ModelVersion(version=1, status="registered", created_at=now())
    results, scores = {}, {}
    for processes in (1, 2):
        training = TrainingConfig(batch_size=16, max_seq_length=32, processes=processes, seed=1)
        result = fine_tune(tiny_model, parent, [data], [], training, tmp_path / f"runs{processes}")
        results[processes] = result
        scores[processes] = evaluate_model(result.model_dir, [test]).metrics[test.name]
    assert results[1].world_size == 1
    assert results[2].world_size == 2, "two processes really took part"
    summary = json.loads(Path(results[2].model_dir, "refit_training.json").read_text())
    assert summary["world_size"] == 2
    # The same global batch, so the same number of optimizer steps; under DDP the incomplete
    # last batch is dropped, which can save one step.
    assert results[1].global_step - 1 <= results[2].global_step <= results[1].global_step
    for metric in ("spearman", "pearson"):
        assert scores[2][metric] == pytest.approx(scores[1][metric], abs=0.01)
