"""The run report's gain, forgetting and drift section, from stored figures alone."""

from __future__ import annotations

import pytest

from refit.records import EvalSet
from refit.tasks.report import learning_summary, render_markdown


def eval_set(name: str, key: str, metric: str) -> EvalSet:
    kind = "retrieval" if metric == "ndcg@10" else "scored_pairs"
    return EvalSet(name=name, kind=kind, key=key, primary_metric=metric, origin="test", files={})


SETS = [eval_set("stsb-test", "k-stsb", "spearman"), eval_set("scifact-test", "k-sci", "ndcg@10")]
CANDIDATE = {
    "stsb-test": {"spearman": 0.80},
    "scifact-test": {"ndcg@10": 0.65, "mrr@10": 0.6},
    "embedding-drift": {"mean_cosine": 0.97, "min_cosine": 0.71},
}
CHAMPION = {
    "stsb-test": {"spearman": 0.82},
    "scifact-test": {"ndcg@10": 0.61},
    "embedding-drift": {"mean_cosine": 1.0, "min_cosine": 1.0},
}
# Versions 1 and 2 were scored on STS-B; version 3 is the candidate.
MATRIX = {
    "sets": ["stsb-test (spearman)", "scifact-test (ndcg@10)"],
    "rows": [
        {"version": 1, "status": "registered", "scores": {"stsb-test": 0.84, "scifact-test": None}},
        {"version": 2, "status": "promoted", "scores": {"stsb-test": 0.82, "scifact-test": 0.61}},
        {"version": 3, "status": "promoted", "scores": {"stsb-test": 0.80, "scifact-test": 0.65}},
    ],
}


def test_new_sets_gain_earlier_sets_forget_against_champion_and_best_version():
    learning = learning_summary(SETS, {"k-stsb"}, CANDIDATE, CHAMPION, MATRIX, 3)
    assert [r["eval_set"] for r in learning["new"]] == ["scifact-test"]
    assert [r["eval_set"] for r in learning["earlier"]] == ["stsb-test"]
    assert learning["mean_gain"] == pytest.approx(0.04)
    assert learning["max_forgetting"] == pytest.approx(0.02)
    # Version 1 scored 0.84, above the champion: the candidate is 0.04 below the best.
    assert learning["earlier"][0]["forgetting_from_best"] == pytest.approx(0.04)
    assert learning["drift"] == {"mean_cosine": 0.97, "min_cosine": 0.71}


def test_a_rise_on_the_earlier_data_is_reported_as_no_forgetting():
    better = CANDIDATE | {"stsb-test": {"spearman": 0.86}}
    learning = learning_summary(SETS, {"k-stsb"}, better, CHAMPION, MATRIX, 3)
    assert learning["max_forgetting"] == pytest.approx(-0.04)
    markdown = "\n".join(render_markdown(summary(learning)).splitlines())
    assert "Forgetting: none, every earlier set held or rose (least +0.0400)" in markdown
    assert "at or above it on every set" in markdown


def test_without_earlier_sets_forgetting_is_not_measured():
    learning = learning_summary(SETS, set(), CANDIDATE, CHAMPION)
    assert learning["earlier"] == [] and learning["max_forgetting"] is None
    assert learning["mean_gain"] == pytest.approx((-0.02 + 0.04) / 2)
    markdown = render_markdown(summary(learning))
    assert "Forgetting: not measured" in markdown


def test_the_report_opens_with_the_section():
    learning = learning_summary(SETS, {"k-stsb"}, CANDIDATE, CHAMPION, MATRIX, 3)
    markdown = render_markdown(summary(learning))
    section = markdown.index("## Gain, forgetting and drift")
    assert section < markdown.index("## Data")
    assert "| new | scifact-test | ndcg@10 | 0.6100 | 0.6500 | +0.0400 |" in markdown
    assert "| earlier | stsb-test | spearman | 0.8200 | 0.8000 | -0.0200 |" in markdown
    assert "Forgetting (largest drop on an earlier set): **0.0200**" in markdown
    assert "at most **0.0400** below" in markdown
    assert "mean cosine **0.9700** (lowest 0.7100)" in markdown


def summary(learning: dict) -> dict:
    return {
        "decision": "promoted",
        "version": 3,
        "parent": 2,
        "champion": 3,
        "model_path": "/r/versions/3/model",
        "registry": "/r",
        "data": {"new": 10, "replay": 2, "eval": {}},
        "metrics": {"candidate": CANDIDATE, "champion": CHAMPION},
        "gate": [],
        "learning": learning,
    }
