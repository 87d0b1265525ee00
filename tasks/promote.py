"""Register versions and move the champion alias.

Every candidate becomes a version, promoted or rejected, with the reasons. A version directory is
assembled under a staging name and moved into place by one rename; the alias file is replaced
atomically after that. A crash at any moment leaves the old champion or the new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from refit.checkpoint import weights_identity
from refit.records import DataRecord, EvalSet, GateResult, ModelVersion
from refit.registry import Registry, now
from refit.tasks.evaluate import ModelScores, score_key
from refit.tasks.fetch_checkpoint import Checkpoint
from refit.tasks.fine_tune import TrainResult, recorded_learning_rate


def store_eval_sets(registry: Registry, eval_sets: list[EvalSet]) -> list[EvalSet]:
    """Copy evaluation sets into the registry so that later runs evaluate on them too."""
    stored = []
    for es in eval_sets:
        files = registry.store_dataset(es.key, {role: Path(p) for role, p in es.files.items()})
        stored.append(es.model_copy(update={"files": files}))
    return stored


def store_training_data(registry: Registry, data: list[DataRecord]) -> list[DataRecord]:
    """Keep the clean rows of delivered data (new and original) in the registry for replay."""
    kept = []
    for record in data:
        if record.role in ("new", "original") and record.clean_path and not record.stored:
            key = hashlib.sha256(
                "|".join([record.structure, *sorted(f.sha256 for f in record.files)]).encode()
            ).hexdigest()[:24]
            table = pq.read_table(record.clean_path)
            table = table.drop_columns([c for c in table.column_names if c.startswith("__")])
            with tempfile.TemporaryDirectory(dir=registry.root) as tmp:
                pq.write_table(table, Path(tmp) / "data.parquet")
                files = registry.store_dataset(f"train-{key}", {"data": Path(tmp) / "data.parquet"})
            record = record.model_copy(update={"stored": files["data"]})
        kept.append(record)
    return kept


def register_base(
    registry: Registry,
    checkpoint: Checkpoint,
    original: list[DataRecord],
    eval_sets: list[EvalSet],
) -> ModelVersion:
    """Register the starting model as version 1 and champion, with the data it was trained on."""
    registry.init(checkpoint.source, checkpoint.identity)
    staging = registry.staging_dir()
    shutil.copytree(checkpoint.model_dir, staging / "model", symlinks=False)
    record = ModelVersion(
        version=0,
        status="registered",
        created_at=now(),
        source=checkpoint.source,
        data=store_training_data(registry, original),
        eval_sets=store_eval_sets(registry, eval_sets),
        run={"identity": checkpoint.identity},
    )
    (staging / "README.md").write_text(model_card(record, registry))
    version = registry.add_version(staging, record)
    registry.set_champion(version, "register", reason=f"registered {checkpoint.source}")
    return registry.get(version)


def register_candidate(
    registry: Registry,
    parent: ModelVersion,
    train: TrainResult,
    data: list[DataRecord],
    eval_sets: list[EvalSet],
    candidate: ModelScores,
    champion: ModelScores,
    gate: GateResult,
    max_seq_length: int | None,
    hyperparameters: dict[str, Any],
    run: dict[str, Any],
) -> ModelVersion:
    stored = store_eval_sets(registry, eval_sets)
    staging = registry.staging_dir()
    os.rename(train.model_dir, staging / "model")
    # Each version records the identity of its own weights, so that `--model` naming any
    # version of this lineage is recognised as the same model.
    run = {**run, "identity": weights_identity(staging / "model")}
    record = ModelVersion(
        version=0,
        status=gate.decision,
        parent=parent.version,
        created_at=now(),
        training={
            "learning_rate": recorded_learning_rate(train.learning_rate, parent),
            "learning_rate_used": train.learning_rate,
            "losses": {**parent.training.get("losses", {}), **train.losses},
            "hyperparameters": hyperparameters,
            "global_step": train.global_step,
            "training_loss": train.training_loss,
            "train_seconds": train.train_seconds,
            "device": train.device,
            "datasets": train.datasets,
        },
        data=store_training_data(registry, data),
        eval_sets=stored,
        metrics=candidate.metrics,
        champion_metrics=champion.metrics,
        gate=gate,
        reasons=gate.reasons,
        run=run,
    )
    for es in stored:
        if es.name in candidate.metrics:
            from refit.fsutil import write_json

            write_json(
                staging / "scores" / f"{score_key(es, max_seq_length)}.json",
                {"eval_set": es.name, "metrics": candidate.metrics[es.name], "computed_at": now()},
            )
    version = registry.add_version(staging, record)
    record = registry.get(version)
    (registry.version_dir(version) / "README.md").write_text(model_card(record, registry))
    if gate.decision == "promoted":
        registry.set_champion(version, "promote", reason="; ".join(gate.reasons))
    else:
        registry.log(
            "reject", version=version, champion=parent.version, reason="; ".join(gate.reasons)
        )
    return record


def model_card(record: ModelVersion, registry: Registry) -> str:
    meta = registry.meta()
    lines = [
        f"# {meta['model']} — version {record.version or '(new)'}",
        "",
        f"- status: **{record.status}**",
        f"- parent: {record.parent if record.parent else '(none: the starting model)'}",
        f"- created: {record.created_at}",
    ]
    if record.training:
        t = record.training
        lines += [
            f"- learning rate: {t.get('learning_rate')}",
            f"- losses: {t.get('losses')}",
            f"- steps: {t.get('global_step')}",
        ]
    if record.data:
        lines += [
            "",
            "## Training data",
            "",
            "| name | role | structure | rows | files |",
            "|---|---|---|---|---|",
        ]
        for d in record.data:
            files = ", ".join(f"`{f.uri}` (sha256 {f.sha256[:12]})" for f in d.files[:3])
            lines.append(f"| {d.name} | {d.role} | {d.structure} | {d.rows} | {files} |")
    if record.metrics:
        lines += [
            "",
            "## Metrics",
            "",
            "| set | metric | this version | parent |",
            "|---|---|---|---|",
        ]
        for name, metrics in record.metrics.items():
            for m, v in metrics.items():
                p = record.champion_metrics.get(name, {}).get(m)
                lines.append(f"| {name} | {m} | {v:.4f} | {'' if p is None else f'{p:.4f}'} |")
    if record.gate:
        lines += ["", "## Gate", ""] + [
            f"- {'pass' if c.passed else 'FAIL'}: {c.reason}" for c in record.gate.checks
        ]
    return "\n".join(lines) + "\n"


@task(name="register-base", cache_policy=NO_CACHE)
def register_base_task(
    registry_root: str, checkpoint: Checkpoint, original: list[DataRecord], eval_sets: list[EvalSet]
) -> ModelVersion:
    return register_base(Registry(registry_root), checkpoint, original, eval_sets)


@task(name="promote", cache_policy=NO_CACHE)
def register_candidate_task(registry_root: str, **kwargs: Any) -> ModelVersion:
    return register_candidate(Registry(registry_root), **kwargs)
