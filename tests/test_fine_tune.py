"""Training in a child process: resume after a kill, freezing, loss choice, learning rate."""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl

from refit.config import DataSpec, TrainingConfig, load_config
from refit.errors import ConfigError, TrainingError
from refit.records import ModelVersion
from refit.registry import now
from refit.tasks.fine_tune import choose_learning_rate, choose_losses, fine_tune
from refit.tasks.validate_data import validate_training_data

pytestmark = pytest.mark.slow


def champion(**training) -> ModelVersion:
    return ModelVersion(version=1, status="registered", created_at=now(), training=training)


def test_learning_rate_is_half_the_recorded_one_else_2e_5():
    assert choose_learning_rate(TrainingConfig(), champion()) == pytest.approx(2e-5)
    assert choose_learning_rate(TrainingConfig(), champion(learning_rate=4e-5)) == pytest.approx(
        2e-5
    )
    assert choose_learning_rate(
        TrainingConfig(learning_rate=1e-4), champion(learning_rate=4e-5)
    ) == pytest.approx(1e-4)


def test_distillation_without_replay_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("replay: {size: 0}\ntraining: {distill: 20}\n")
    with pytest.raises(ConfigError, match="replay.size is 0: set replay.size above 0"):
        load_config(path)
    path.write_text("replay: {size: 0.2}\ntraining: {distill: 20}\n")
    assert load_config(path).training.distill == 20


def test_loss_comes_from_the_champion_then_the_default():
    recorded = champion(losses={"scored_pairs": "CosineSimilarityLoss"})
    assert choose_losses(["scored_pairs", "pairs"], TrainingConfig(), recorded) == {
        "scored_pairs": "CosineSimilarityLoss",
        "pairs": "MultipleNegativesRankingLoss",
    }
    with pytest.raises(ConfigError, match="not a sentence-transformers loss"):
        choose_losses(["pairs"], TrainingConfig(losses={"pairs": "NoSuchLoss"}), champion())


def test_a_killed_training_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    data = validate_training_data(
        DataSpec(
            path=str(write_csv(tmp_path / "d.csv", stsb_rows("train", 400))), score_range=(0, 5)
        ),
        "new",
        tmp_path / "clean.parquet",
    )
    training = TrainingConfig(
        batch_size=16, max_seq_length=32, checkpoint_steps=5, logging_steps=1, max_steps=14
    )
    killed = {}

    def kill_after_a_checkpoint(event):
        if event.get("event") == "start":
            killed["pid"] = event["pid"]
        if event.get("event") == "progress" and event["step"] >= 7 and "at" not in killed:
            killed["at"] = event["step"]
            os.kill(killed["pid"], signal.SIGKILL)

    args = (tiny_model, champion(), [data], [], training, tmp_path / "runs")
    with pytest.raises(TrainingError, match="killed by signal 9"):
        fine_tune(*args, on_event=kill_after_a_checkpoint)
    assert killed["at"] >= 7

    events = []
    result = fine_tune(*args, on_event=events.append)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-5")
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[0]["step"] == 6, "the resumed run goes on from the checkpoint's step"
    assert result.global_step == 14

    # The learning rate at the first resumed step equals an uninterrupted run's at that step.
    fresh_events = []
    fine_tune(
        tiny_model,
        champion(),
        [data],
        [],
        training,
        tmp_path / "fresh",
        on_event=fresh_events.append,
    )
    fresh = {e["step"]: e["learning_rate"] for e in fresh_events if e["event"] == "progress"}
    assert progress[0]["learning_rate"] == pytest.approx(fresh[6])

    # A finished training is not repeated: same inputs, same work directory, no new process.
    again = []
    assert fine_tune(*args, on_event=again.append).global_step == 14
    assert again == []


def test_freezing_embeddings_and_layers(tiny_model, tmp_path):
    data = validate_training_data(
        DataSpec(path=str(write_jsonl(tmp_path / "p.jsonl", scifact_pairs(64)))),
        "new",
        tmp_path / "clean.parquet",
    )
    training = TrainingConfig(
        batch_size=16, max_seq_length=32, max_steps=2, freeze_embeddings=True, freeze_layers=1
    )
    result = fine_tune(tiny_model, champion(), [data], [], training, tmp_path / "runs")
    summary = json.loads(
        (tmp_path / "runs").glob("train-*/model/refit_training.json").__next__().read_text()
    )
    # Embeddings of a 2000-token vocabulary at hidden size 32 alone are 64,000 parameters.
    assert summary["frozen_parameters"] > 64_000
    assert result.losses == {"pairs": "MultipleNegativesRankingLoss"}


def test_the_learning_rate_does_not_halve_again_with_every_delivery():
    from refit.tasks.fine_tune import recorded_learning_rate

    v1 = champion()  # the starting model: nothing recorded
    used_v2 = choose_learning_rate(TrainingConfig(), v1)
    v2 = champion(learning_rate=recorded_learning_rate(used_v2, v1))
    used_v3 = choose_learning_rate(TrainingConfig(), v2)
    v3 = champion(learning_rate=recorded_learning_rate(used_v3, v2))
    used_v4 = choose_learning_rate(TrainingConfig(), v3)
    assert (used_v2, used_v3, used_v4) == pytest.approx((2e-5, 1e-5, 1e-5))


def test_distillation_holds_replay_texts_near_the_champions_embeddings(tiny_model, tmp_path):
    import numpy as np
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    new = validate_training_data(
        DataSpec(path=str(write_jsonl(tmp_path / "p.jsonl", scifact_pairs(160)))),
        "new",
        tmp_path / "new.parquet",
    )
    replay = validate_training_data(
        DataSpec(
            path=str(write_csv(tmp_path / "r.csv", stsb_rows("train", 96))), score_range=(0, 5)
        ),
        "replay",
        tmp_path / "replay.parquet",
    )
    table = pq.read_table(replay.clean_path)
    texts = sorted(set(table["sentence1"].to_pylist()) | set(table["sentence2"].to_pylist()))

    def mean_cosine_to_champion(model_dir) -> float:
        def embed(path):
            return SentenceTransformer(str(path), device="cpu").encode(
                texts, normalize_embeddings=True
            )

        return float(np.mean(np.sum(embed(tiny_model) * embed(model_dir), axis=1)))

    drifted = {}
    for weight in (0.0, 20.0):
        training = TrainingConfig(
            batch_size=16, max_seq_length=32, learning_rate=2e-3, max_steps=30, distill=weight
        )
        result = fine_tune(
            tiny_model, champion(), [new], [replay], training, tmp_path / f"runs-{weight}"
        )
        drifted[weight] = mean_cosine_to_champion(result.model_dir)
        if weight:
            assert result.datasets["distill"] == len(texts)
            assert result.losses["distill"] == "EmbedDistillLoss x 20"
        else:
            assert "distill" not in result.datasets

    # Without distillation a high learning rate moves the old texts' embeddings a long way.
    # Measured: 0.84 without distillation, 0.997 with it.
    assert drifted[0.0] < 0.95, drifted
    assert drifted[20.0] > 0.98, drifted
