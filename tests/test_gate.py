"""The gate: each rule's decision, missing metrics, the empty gate, and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refit.config import DEFAULT_GATE, GateCheck, load_config
from refit.errors import ConfigError
from refit.records import EvalSet
from refit.tasks.gate import apply_gate


def es(name: str, kind: str = "scored_pairs", primary: str = "spearman") -> EvalSet:
    return EvalSet(name=name, kind=kind, key=name, primary_metric=primary, origin="t", files={})


SETS = [es("stsb-test"), es("scifact-test", "retrieval", "ndcg@10")]
CHAMPION = {"stsb-test": {"spearman": 0.80}, "scifact-test": {"ndcg@10": 0.60}}


def decide(checks, candidate, champion=CHAMPION, sets=SETS):
    return apply_gate(checks, sets, candidate, champion)


def test_default_gate_allows_a_small_drop_on_every_primary_metric():
    result = decide(
        DEFAULT_GATE, {"stsb-test": {"spearman": 0.795}, "scifact-test": {"ndcg@10": 0.7}}
    )
    assert result.decision == "promoted"
    assert {(c.eval_set, c.metric) for c in result.checks} == {
        ("stsb-test", "spearman"),
        ("scifact-test", "ndcg@10"),
    }


def test_default_gate_rejects_a_drop_beyond_0_01():
    result = decide(
        DEFAULT_GATE, {"stsb-test": {"spearman": 0.785}, "scifact-test": {"ndcg@10": 0.7}}
    )
    assert result.decision == "rejected"
    failed = [c for c in result.checks if not c.passed]
    assert [c.eval_set for c in failed] == ["stsb-test"]
    assert failed[0].delta == pytest.approx(-0.015)
    assert "stsb-test/spearman changed -0.0150" in result.reasons[0]


@pytest.mark.parametrize(
    ("check", "value", "passed"),
    [
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", min=0.65), 0.66, True),
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", min=0.65), 0.64, False),
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", min_gain=0.03), 0.631, True),
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", min_gain=0.03), 0.62, False),
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", max_drop=0.0), 0.60, True),
        (GateCheck(eval_set="scifact-test", metric="ndcg@10", max_drop=0.0), 0.599, False),
    ],
)
def test_each_rule(check, value, passed):
    result = decide([check], {"stsb-test": {"spearman": 0.8}, "scifact-test": {"ndcg@10": value}})
    assert result.checks[0].passed is passed
    assert result.decision == ("promoted" if passed else "rejected")


def test_missing_metric_fails():
    check = GateCheck(eval_set="scifact-test", metric="mrr@10", min=0.0)
    result = decide([check], {"scifact-test": {"ndcg@10": 0.9}})
    assert result.decision == "rejected"
    assert "has no metric 'mrr@10'" in result.reasons[0]


def test_unknown_evaluation_set_fails():
    result = decide([GateCheck(eval_set="nope", min=0.0)], {"stsb-test": {"spearman": 1.0}})
    assert result.decision == "rejected"
    assert "no evaluation set named 'nope'" in result.reasons[0]


def test_explicitly_empty_gate_promotes_nothing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gate: []\n")
    cfg = load_config(path)
    assert cfg.gate_checks == ()
    result = decide(cfg.gate_checks, {"stsb-test": {"spearman": 0.99}})
    assert result.decision == "rejected"
    assert "no checks" in result.reasons[0]


def test_gate_left_out_means_the_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {epochs: 1}\n")
    assert load_config(path).gate_checks == DEFAULT_GATE


def test_a_check_needs_exactly_one_change_rule(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gate:\n  - {eval_set: a, metric: m, max_drop: 0.1, min_gain: 0.1}\n")
    with pytest.raises(ConfigError, match="max_drop or min_gain, not both"):
        load_config(path)
    path.write_text("gate:\n  - {eval_set: a, metric: m}\n")
    with pytest.raises(ConfigError, match="has no rule"):
        load_config(path)


metric_values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def gate_check(draw) -> GateCheck:
    floor = draw(st.one_of(st.none(), metric_values))
    change = draw(st.sampled_from([None, "max_drop", "min_gain"]))
    if floor is None and change is None:
        change = "max_drop"
    tolerance = {change: draw(st.floats(0.0, 0.2))} if change else {}
    return GateCheck(
        eval_set=draw(st.sampled_from(["stsb-test", "scifact-test"])), min=floor, **tolerance
    )


checks = st.lists(gate_check(), min_size=1, max_size=4)


@given(checks, metric_values, metric_values)
def test_a_missing_metric_always_fails(gate, stsb, scifact):
    candidate = {"stsb-test": {"spearman": stsb}}  # scifact-test is missing
    result = decide(gate, candidate)
    for check in result.checks:
        if check.eval_set == "scifact-test":
            assert check.passed is False
    if any(c.eval_set == "scifact-test" for c in gate):
        assert result.decision == "rejected"


@given(checks, metric_values, metric_values, st.floats(0, 0.3), st.floats(0, 0.3))
def test_a_better_candidate_never_fails_where_a_worse_one_passed(gate, a, b, up_a, up_b):
    worse = {"stsb-test": {"spearman": a}, "scifact-test": {"ndcg@10": b}}
    better = {"stsb-test": {"spearman": a + up_a}, "scifact-test": {"ndcg@10": b + up_b}}
    if decide(gate, worse).decision == "promoted":
        assert decide(gate, better).decision == "promoted"


def test_gate_names_are_checked_before_training():
    from refit.tasks.evaluate import METRICS
    from refit.tasks.gate import check_gate_names

    with pytest.raises(ConfigError, match="'stsb-tset'.*it has: embedding-drift, scifact-test"):
        check_gate_names([GateCheck(eval_set="stsb-tset", min=0.1)], SETS, METRICS)
    with pytest.raises(ConfigError, match="'spearmann'.*computes: spearman, pearson"):
        check_gate_names(
            [GateCheck(eval_set="stsb-test", metric="spearmann", min=0.1)], SETS, METRICS
        )
    check_gate_names(
        [GateCheck(eval_set="embedding-drift", metric="mean_cosine", min=0.9)], SETS, METRICS
    )


def test_no_applicable_check_promotes_nothing():
    result = decide(DEFAULT_GATE, {}, champion={}, sets=[])
    assert result.decision == "rejected"
    assert "no evaluation set" in result.reasons[0]


def test_relative_paths_in_a_config_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "refit.yaml").write_text(
        "registry: reg\nnew_data: [{path: data/new.csv, score_range: [0, 5]}]\n"
        "eval_data: [{queries: t/q.jsonl, corpus: t/c.jsonl, qrels: t/r.tsv}]\n"
        "landing: {location: landing}\nmodel: some-org/some-model\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(folder / "refit.yaml", {"eval_data": ["flag.csv"]})
    assert cfg.registry == str(folder / "reg")
    assert cfg.landing.location == str(folder / "landing")
    assert cfg.model == "some-org/some-model"  # a hub id, not a path
    cfg = load_config(folder / "refit.yaml")
    assert cfg.new_data[0].path == str(folder / "data" / "new.csv")
    assert cfg.eval_data[0].queries == str(folder / "t" / "q.jsonl")
    flagged = load_config(folder / "refit.yaml", {"new_data": ["x.csv"]})
    assert flagged.new_data[0].path == "x.csv"  # flags stay relative to the working directory
    assert flagged.new_data[0].score_range == (0.0, 5.0)  # and keep the config's reading
