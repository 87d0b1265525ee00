"""The whole flow on a tiny real model and real rows: promote, reject, reuse, and fail safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl

from refit.config import RefitConfig
from refit.errors import DataError, TrainingError
from refit.flows.retrain import retrain
from refit.registry import Registry
from refit.tasks.report import artifact_key

pytestmark = pytest.mark.slow

TRAINING = {"batch_size": 16, "max_seq_length": 64, "checkpoint_steps": 5}


@pytest.fixture
def data(tmp_path) -> dict[str, Path]:
    return {
        "stsb_train": write_csv(tmp_path / "data" / "stsb-train.csv", stsb_rows("train", 240)),
        "stsb_test": write_csv(tmp_path / "data" / "stsb-test.csv", stsb_rows("test", 120)),
        "scifact": write_jsonl(tmp_path / "data" / "scifact.jsonl", scifact_pairs(160)),
    }


def read_artifact(key: str):
    """The newest artifact under ``key``, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact with key {key}"
    return found[0]


def first_run(tiny_model, data, registry, **extra):
    cfg = RefitConfig(
        model=str(tiny_model),
        registry=str(registry),
        new_data=[{"path": str(data["stsb_train"]), "score_range": [0, 5]}],
        eval_data=[{"path": str(data["stsb_test"]), "name": "stsb-test", "score_range": [0, 5]}],
        training=TRAINING,
        gate=[{"eval_set": "stsb-test", "metric": "spearman", "max_drop": 0.05}],
        **extra,
    )
    return retrain(cfg)


def test_promote_then_reject_then_reuse_champion_scores(tiny_model, data, tmp_path):
    registry = Registry(tmp_path / "reg")

    first = first_run(tiny_model, data, registry.root)
    assert first["decision"] == "promoted"
    assert (first["version"], first["champion"]) == (2, 2)
    assert registry.champion() == 2
    assert [(v.version, v.status) for v in registry.versions()] == [
        (1, "registered"),
        (2, "promoted"),
    ]
    assert registry.get(2).training["losses"] == {"scored_pairs": "CoSENTLoss"}
    assert registry.get(2).training["learning_rate"] == pytest.approx(2e-5)
    assert (registry.model_dir(2) / "model.safetensors").is_file()
    assert (registry.version_dir(2) / "README.md").read_text().startswith("# ")
    assert not list((registry.root / "runs").glob("train-*/checkpoints"))
    report = read_artifact(artifact_key(registry.model_name(), "report"))
    assert "Decision: promoted" in report.data and "| stsb-test | spearman |" in report.data
    history = read_artifact(artifact_key(registry.model_name(), "metrics")).data
    rows = json.loads(history) if isinstance(history, str) else history
    spearman = [r for r in rows if r["version"] == 2 and r["metric"] == "spearman"]
    assert spearman[0]["value"] == pytest.approx(
        first["metrics"]["candidate"]["stsb-test"]["spearman"], abs=1e-6
    )
    assert spearman[0]["champion"] is True

    # New pairs arrive; a floor no model reaches makes the gate reject the candidate.
    second = retrain(
        RefitConfig(
            registry=str(registry.root),
            new_data=[str(data["scifact"])],
            training=TRAINING,
            gate=[{"eval_set": "stsb-test", "metric": "spearman", "min": 0.99}],
        )
    )
    assert second["decision"] == "rejected"
    assert (second["version"], second["champion"]) == (3, 2)
    assert registry.champion() == 2
    rejected = registry.get(3)
    assert rejected.status == "rejected"
    assert "floor 0.99" in rejected.reasons[0]
    assert (registry.model_dir(3) / "model.safetensors").is_file(), "rejected candidates are kept"
    assert registry.promotions()[-1]["event"] == "reject"
    # Replay of STS-B (scored pairs) trains beside the new pairs, each with its own loss.
    assert second["training"]["losses"] == {
        "pairs": "MultipleNegativesRankingLoss",
        "scored_pairs": "CoSENTLoss",
    }
    assert second["data"]["replay_by_structure"]["scored_pairs"] == round(
        0.2 * second["data"]["new"]
    )
    assert second["training"]["learning_rate"] == pytest.approx(1e-5)  # half the champion's
    # The evaluation sets accumulate: the lineage's STS-B test plus the new held-out set.
    assert set(second["metrics"]["candidate"]) == {
        "stsb-test",
        "scifact-heldout",
        "embedding-drift",
    }
    assert second["champion_scores_reused"] == ["stsb-test"]
    # The accuracy matrix over the lineage comes from stored scores alone.
    matrix = {r["version"]: r["scores"] for r in second["accuracy_matrix"]["rows"]}
    assert list(matrix) == [1, 2, 3]
    assert matrix[1]["stsb-test"] == pytest.approx(
        first["metrics"]["champion"]["stsb-test"]["spearman"]
    )
    assert matrix[3]["scifact-heldout"] == pytest.approx(
        second["metrics"]["candidate"]["scifact-heldout"]["ndcg@10"]
    )
    assert matrix[1]["scifact-heldout"] is None  # version 1 was never scored on it
    drift = second["metrics"]["candidate"]["embedding-drift"]
    assert 0.0 < drift["min_cosine"] <= drift["mean_cosine"] <= 1.0 + 1e-6
    assert second["metrics"]["champion"]["embedding-drift"]["mean_cosine"] == 1.0
    # Gain on the delivery's own set, forgetting on the lineage's, drift: one record and report.
    learning = second["learning"]
    assert [r["eval_set"] for r in learning["new"]] == ["scifact-heldout"]
    assert [r["eval_set"] for r in learning["earlier"]] == ["stsb-test"]
    stsb = second["metrics"]["delta"]["stsb-test"]["spearman"]
    assert learning["max_forgetting"] == pytest.approx(-stsb)
    assert learning["mean_gain"] == pytest.approx(
        second["metrics"]["delta"]["scifact-heldout"]["ndcg@10"]
    )
    best = max(matrix[1]["stsb-test"], matrix[2]["stsb-test"])
    assert learning["earlier"][0]["forgetting_from_best"] == pytest.approx(
        best - matrix[3]["stsb-test"]
    )
    assert learning["drift"] == drift
    report = read_artifact(artifact_key(registry.model_name(), "report")).data
    assert "## Gain, forgetting and drift" in report
    assert "| earlier | stsb-test | spearman |" in report
    assert f"mean cosine **{drift['mean_cosine']:.4f}**" in report

    # The same delivery again: the champion has been scored on both sets, so it is not encoded.
    third = retrain(
        RefitConfig(registry=str(registry.root), new_data=[str(data["scifact"])], training=TRAINING)
    )
    assert sorted(third["champion_scores_reused"]) == ["scifact-heldout", "stsb-test"]
    assert third["encoded_texts"]["champion"] == 0
    assert third["encoded_texts"]["candidate"] > 0
    assert third["metrics"]["champion"] == second["metrics"]["champion"]
    # The champion's probe embeddings were stored with it in run 2 and reused in run 3.
    assert len(list((registry.version_dir(2) / "probes").glob("*.npy"))) == 1


def test_invalid_new_data_stops_before_training_and_keeps_the_champion(tiny_model, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    first_run(tiny_model, data, registry.root)
    bad = stsb_rows("train", 30)
    bad[4]["sentence1"] = "   "
    path = write_csv(tmp_path / "bad.csv", bad)
    before = path.read_bytes()
    with pytest.raises(DataError) as info:
        retrain(
            RefitConfig(
                registry=str(registry.root),
                new_data=[{"path": str(path), "score_range": [0, 5]}],
                training=TRAINING,
            )
        )
    assert "row 5" in str(info.value) and "column 'sentence1'" in str(info.value)
    assert path.read_bytes() == before
    assert registry.champion() == 2 and registry.version_numbers() == [1, 2]
    assert not list((registry.root / "runs").glob("train-*/model"))


def test_training_timeout_stops_the_process_and_registers_nothing(tiny_model, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    with pytest.raises(TrainingError, match="timed out after 1 s"):
        retrain(
            RefitConfig(
                model=str(tiny_model),
                registry=str(registry.root),
                new_data=[{"path": str(data["stsb_train"]), "score_range": [0, 5]}],
                training={**TRAINING, "timeout_s": 1},
            )
        )
    assert registry.champion() == 1
    assert registry.version_numbers() == [1]
    assert not (registry.root / ".lock.holder").exists()


def test_non_finite_loss_fails_the_run_and_promotes_nothing(tiny_model, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    with pytest.raises(TrainingError) as info:
        retrain(
            RefitConfig(
                model=str(tiny_model),
                registry=str(registry.root),
                new_data=[{"path": str(data["stsb_train"]), "score_range": [0, 5]}],
                training={**TRAINING, "learning_rate": 1e30, "logging_steps": 1},
            )
        )
    assert "loss became nan" in str(info.value) or "loss became inf" in str(info.value)
    assert "nothing was promoted" in str(info.value)
    assert registry.champion() == 1 and registry.version_numbers() == [1]


def refit_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "refit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_cli_json_contract_with_columns_in_another_order(tiny_model, tmp_path):
    rows = stsb_rows("train", 200)
    new = write_csv(tmp_path / "new.csv", rows, ["score", "genre", "sentence2", "sentence1"])
    config = tmp_path / "refit.yaml"
    config.write_text(
        "new_data:\n  - path: PLACEHOLDER\n    score_range: [0, 5]\n"
        "training: {batch_size: 16, max_seq_length: 64}\n"
        "gate:\n  - {eval_set: '*', metric: primary, max_drop: 1.0}\n"
    )
    registry = tmp_path / "reg"
    out = refit_cli(
        "retrain",
        "--model",
        str(tiny_model),
        "--new-data",
        str(new),
        "--config",
        str(config),
        "--registry",
        str(registry),
        "--json",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["decision"] == "promoted"
    assert (summary["version"], summary["champion"]) == (2, 2)
    assert set(summary["metrics"]) >= {"candidate", "champion"}
    assert set(summary["metrics"]["candidate"]["new-heldout"]) == {"spearman", "pearson"}
    assert summary["gate"][0]["passed"] is True and "delta" in summary["gate"][0]

    listing = refit_cli("models", "--registry", str(registry), "--json", cwd=tmp_path)
    models = json.loads(listing.stdout)
    assert models["champion"] == 2
    assert [v["status"] for v in models["versions"]] == ["registered", "promoted"]

    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(tiny_model, other)
    with open(other / "model.safetensors", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    refused = refit_cli(
        "retrain",
        "--model",
        str(other),
        "--new-data",
        str(new),
        "--registry",
        str(registry),
        "--json",
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    error = json.loads(refused.stdout.strip().splitlines()[-1])
    assert "different model" in error["error"] and "--registry" in error["fix"]


def test_replay_reads_the_registry_copy_when_delivered_files_are_gone(tiny_model, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    first_run(tiny_model, data, registry.root)
    stored = registry.get(2).data[0].stored
    assert stored and Path(stored).is_file() and str(registry.root) in stored
    data["stsb_train"].unlink()  # the delivered file is cleaned up by someone else
    second = retrain(
        RefitConfig(
            registry=str(registry.root),
            new_data=[str(data["scifact"])],
            training=TRAINING,
            gate=[{"eval_set": "*", "max_drop": 1.0}],
        )
    )
    assert second["data"]["replay_by_structure"] == {
        "scored_pairs": round(0.2 * second["data"]["new"])
    }
