"""Models are released when a step ends: evaluation in-process, training with its process."""

from __future__ import annotations

import gc

import pytest
from conftest import stsb_rows, write_csv

from refit.config import DataSpec
from refit.tasks.evaluate import evaluate_model
from refit.tasks.validate_data import load_eval_set


def live_models() -> int:
    from sentence_transformers import SentenceTransformer

    gc.collect()
    return sum(isinstance(o, SentenceTransformer) for o in gc.get_objects())


def test_evaluation_releases_the_model(tiny_model, tmp_path):
    es, _ = load_eval_set(
        DataSpec(
            path=str(write_csv(tmp_path / "t.csv", stsb_rows("test", 60))), score_range=(0, 5)
        ),
        tmp_path / "eval",
    )
    before = live_models()
    scores = evaluate_model(tiny_model, [es], batch_size=16)
    assert 0.0 < scores.encoded_texts <= 120
    assert -1.0 <= scores.metrics[es.name]["spearman"] <= 1.0
    assert live_models() == before


def test_stored_scores_mean_no_model_is_loaded(tiny_model, tmp_path):
    es, _ = load_eval_set(
        DataSpec(
            path=str(write_csv(tmp_path / "t.csv", stsb_rows("test", 30))), score_range=(0, 5)
        ),
        tmp_path / "eval",
    )
    from refit.tasks.evaluate import score_key

    stored = {score_key(es, None): {"spearman": 0.5, "pearson": 0.4}}
    scores = evaluate_model(tiny_model / "does-not-exist", [es], stored=stored)
    assert scores.reused == [es.name]
    assert scores.encoded_texts == 0
    assert scores.metrics[es.name]["spearman"] == pytest.approx(0.5)
