"""The landing place without a server: readiness, content dedup, restarts, quarantine."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl

from refit.config import RefitConfig
from refit.errors import DataError
from refit.landing import Ledger
from refit.registry import Registry
from refit.unattended import Watcher


def watcher(tmp_path, announced, **landing) -> Watcher:
    cfg = RefitConfig(
        registry=str(tmp_path / "reg"),
        landing={"location": str(tmp_path / "landing"), "settle_seconds": 5, **landing},
    )
    return Watcher(cfg, emit=lambda name, batch: announced.append((name, [f.uri for f in batch])))


def test_a_file_is_announced_once_its_size_has_settled(tmp_path):
    (tmp_path / "landing").mkdir()
    announced: list = []
    w = watcher(tmp_path, announced)
    path = write_jsonl(tmp_path / "landing" / "a.jsonl", scifact_pairs(5))
    assert w.check(now=0.0) == []  # first sight: size recorded
    with open(path, "a") as fh:  # still growing
        fh.write(json.dumps({"anchor": "x", "positive": "y"}) + "\n")
    assert w.check(now=4.0) == []
    assert w.check(now=8.0) == []  # the size changed at t=4: settles at t=9
    assert [f.uri for f in w.check(now=9.5)] == [str(path)]
    assert w.check(now=20.0) == []  # announced once
    assert len(announced) == 1


def test_temporary_and_hidden_files_are_ignored_and_markers_gate_readiness(tmp_path):
    (tmp_path / "landing").mkdir()
    announced: list = []
    w = watcher(tmp_path, announced, marker_suffix=".done")
    write_jsonl(tmp_path / "landing" / ".hidden.jsonl", scifact_pairs(3))
    write_jsonl(tmp_path / "landing" / "b.jsonl.part", scifact_pairs(3))
    data = write_jsonl(tmp_path / "landing" / "b.jsonl", scifact_pairs(3))
    assert w.check(now=100.0) == []  # no marker yet, however long it waits
    (tmp_path / "landing" / "b.jsonl.done").touch()
    assert [f.uri for f in w.check(now=100.0)] == [str(data)]


def test_same_content_under_another_name_and_a_restart_announce_nothing(tmp_path):
    (tmp_path / "landing").mkdir()
    announced: list = []
    first = write_jsonl(tmp_path / "landing" / "a.jsonl", scifact_pairs(5))
    w = watcher(tmp_path, announced, settle_seconds=0)
    w.check(now=0.0)
    assert len(w.check(now=1.0)) == 1
    shutil.copy(first, tmp_path / "landing" / "a-copy.jsonl")
    w.check(now=2.0)
    assert w.check(now=3.0) == []
    restarted = watcher(tmp_path, announced, settle_seconds=0)
    restarted.check(now=0.0)
    assert restarted.check(now=1.0) == []
    assert len(announced) == 1
    states = [e["state"] for e in Ledger(Registry(tmp_path / "reg")).entries()]
    assert states == ["announced"]


@pytest.mark.slow
def test_landed_flow_trains_once_and_quarantines_bad_batches(tiny_model, tmp_path):
    from refit.flows.landed import retrain_landed
    from refit.flows.retrain import retrain

    registry = Registry(tmp_path / "reg")
    retrain(RefitConfig(model=str(tiny_model), registry=str(registry.root)))
    config = tmp_path / "refit.yaml"
    config.write_text(
        f"registry: {registry.root}\n"
        "training: {batch_size: 16, max_seq_length: 32}\n"
        "gate: [{eval_set: '*', metric: primary, max_drop: 1.0}]\n"
        f"landing: {{location: {tmp_path / 'landing'}, read: {{score_range: [0, 5]}}}}\n"
    )
    (tmp_path / "landing").mkdir()
    good = write_csv(tmp_path / "landing" / "good.csv", stsb_rows("train", 120))
    summary = retrain_landed(str(config))  # the nightly path: everything not yet processed
    assert summary["decision"] == "promoted" and summary["files"] == [str(good)]
    assert retrain_landed(str(config), files=[str(good)])["decision"] == "nothing new"

    rows = stsb_rows("train", 200)[120:]
    rows[3]["sentence2"] = ""
    bad = write_csv(tmp_path / "landing" / "bad.csv", rows)
    before = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="row 4"):
        retrain_landed(str(config), files=[str(bad)])
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == before
    quarantined = list((registry.root / "quarantine").glob("*/bad.csv"))
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == bad.read_bytes()
    report = json.loads((quarantined[0].parent / "report.json").read_text())
    assert report["rows"] == [4] and report["column"] == "sentence2"
    assert registry.champion() == 2
    states = {e["uri"]: e["state"] for e in Ledger(registry).entries()}
    assert states == {str(good): "promoted", str(bad): "quarantined"}
