"""The retraining flow: one run takes the champion to a new candidate and decides its fate.

fetch the checkpoint -> validate the data -> (first run: register the model as version 1)
-> sample replay -> fine-tune in a child process -> evaluate candidate and champion
-> gate -> register the candidate and promote it if every check passed -> publish the report.

The registry lock is held for the whole run: two runs on one registry never overlap.
"""

from __future__ import annotations

import shutil
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from refit.config import RefitConfig
from refit.errors import ConfigError, RegistryError
from refit.faults import crash_point
from refit.records import ModelVersion
from refit.registry import Registry
from refit.tasks.evaluate import METRICS, evaluate_task
from refit.tasks.fetch_checkpoint import fetch_checkpoint_task
from refit.tasks.fine_tune import choose_losses, fine_tune_task
from refit.tasks.gate import check_gate_names, gate_task
from refit.tasks.promote import register_base_task, register_candidate_task
from refit.tasks.report import accuracy_matrix, learning_summary, publish_report_task
from refit.tasks.sample_replay import replay_size, sample_replay_task
from refit.tasks.validate_data import validate_data_task


class Stopwatch(dict):
    @contextmanager
    def __call__(self, step: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[step] = round(time.perf_counter() - started, 2)


@flow(name="refit-retrain", validate_parameters=True)
def retrain(config: RefitConfig) -> dict[str, Any]:
    """Retrain the champion on new data with replay; promote the candidate if the gate passes."""
    cfg = config
    logger = get_run_logger()
    registry = Registry(cfg.registry)
    clock = Stopwatch()
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    root = str(registry.root)
    if not registry.exists() and not cfg.model:
        # Checked before the lock, so that a mistyped --registry creates nothing.
        raise RegistryError(
            "no registry here, and no --model to start one",
            file=root,
            fix="check --registry; on the first run, pass --model to register the model",
        )
    if registry.exists() and not cfg.new_data:
        raise ConfigError(
            "no new data to train on",
            file=root,
            fix="pass --new-data (a file, directory, glob or URL) or set new_data in the config",
        )
    with registry.lock(cfg.lock_timeout_s):
        for note in registry.recover():
            logger.warning("Registry recovered from an interrupted run: %s", note)
        with clock("fetch checkpoint"):
            checkpoint = fetch_checkpoint_task(cfg, root)
        first_run = checkpoint.is_new_registry
        run_dir = registry.run_dir(run_id)
        # The candidate must hold against the current champion, also when training starts from
        # another version (--from-version): evaluate on both lineages' sets.
        incumbent = None if first_run else registry.champion()
        lineage_sets = []
        if not first_run:
            lineage_sets = registry.lineage_eval_sets(incumbent)
            known = {es.key for es in lineage_sets}
            lineage_sets += [
                es for es in registry.lineage_eval_sets(checkpoint.version) if es.key not in known
            ]
        train_len = cfg.training.max_seq_length or checkpoint.max_seq_length
        with clock("validate data"):
            prepared = validate_data_task(
                cfg, lineage_sets, run_dir, checkpoint.model_dir, train_len, first_run
            )
        # Mistakes in the gate or the losses are found now, not after training.
        check_gate_names(cfg.gate_checks, prepared.eval_sets, METRICS)
        choose_losses(
            [r.structure for r in prepared.new],
            cfg.training,
            checkpoint.record or ModelVersion(version=0, status="registered", created_at=""),
        )
        crash_point("after-validation")
        if first_run:
            parent = register_base_task(
                root, checkpoint, prepared.original, prepared.base_eval_sets
            )
            incumbent = parent.version
            logger.info("Registered %s as version %d (champion)", checkpoint.source, parent.version)
        else:
            parent = checkpoint.record
        if not prepared.new:  # a first run that only registers the model
            return {
                "decision": "registered",
                "version": parent.version,
                "champion": registry.champion(),
                "registry": root,
                "model_path": str(registry.model_dir(parent.version)),
            }

        pool = registry.replay_pool(parent.version)
        if not first_run:
            pool += prepared.original
        k = replay_size(cfg.replay.size, sum(r.rows for r in prepared.new))
        with clock("sample replay"):
            replay = sample_replay_task(
                pool, k, cfg.replay.seed, prepared.new, prepared.eval_sets, run_dir / "replay"
            )
        with clock("fine-tune"):
            trained = fine_tune_task(
                registry.model_dir(parent.version),
                parent,
                prepared.new,
                replay,
                cfg.training,
                registry.root / "runs",
                cfg.trust_remote_code,
            )
        crash_point("after-training")
        eval_len = cfg.evaluation.max_seq_length or cfg.training.max_seq_length
        with clock("evaluate"):
            candidate, champion = evaluate_task(
                root,
                incumbent,
                trained.model_dir,
                prepared.eval_sets,
                cfg.evaluation.batch_size,
                eval_len,
                cfg.trust_remote_code,
                cfg.evaluation.drift_probe_size,
            )
        crash_point("after-evaluation")
        gate = gate_task(
            list(cfg.gate_checks), prepared.eval_sets, candidate.metrics, champion.metrics
        )
        with clock("register"):
            version = register_candidate_task(
                root,
                parent=parent,
                train=trained,
                data=[*prepared.new, *([] if first_run else prepared.original), *replay],
                eval_sets=prepared.eval_sets,
                candidate=candidate,
                champion=champion,
                gate=gate,
                max_seq_length=eval_len,
                hyperparameters=cfg.training.model_dump(mode="json")
                | {"replay": cfg.replay.model_dump(mode="json")},
                run={"id": run_id, "timings": dict(clock)},
            )
        # The candidate now lives in the registry; the training checkpoints (optimizer state
        # included, several times the model's size) are no longer needed to resume.
        # The run's scratch (clean copies of the data, now kept in the registry) goes too.
        shutil.rmtree(Path(trained.work_dir) / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        summary = {
            "decision": gate.decision,
            "version": version.version,
            "parent": parent.version,
            "champion": registry.champion(),
            "registry": root,
            "model_path": str(registry.model_dir(version.version)),
            "metrics": {
                "candidate": candidate.metrics,
                "champion": champion.metrics,
                "delta": {
                    name: {
                        m: v - champion.metrics[name][m]
                        for m, v in values.items()
                        if m in champion.metrics.get(name, {})
                    }
                    for name, values in candidate.metrics.items()
                },
            },
            "gate": [c.model_dump(mode="json") for c in gate.checks],
            "reasons": gate.reasons,
            "data": {
                "new": sum(r.rows for r in prepared.new),
                "replay": sum(r.rows for r in replay),
                "replay_by_structure": {r.structure: r.rows for r in replay},
                "eval": {es.name: es.rows for es in prepared.eval_sets},
                "dropped": {
                    r.name: r.dropped for r in [*prepared.original, *prepared.new] if r.dropped
                },
            },
            "eval_sets": [
                {"name": es.name, "kind": es.kind, "origin": es.origin, "weak": es.weak}
                for es in prepared.eval_sets
            ],
            "findings": [
                {"data": name, "level": f.level, "code": f.code, "message": f.message}
                for name, f in prepared.findings()
            ]
            + [
                {"data": r.name, "level": f.level, "code": f.code, "message": f.message}
                for r in replay
                for f in r.findings
            ],
            "training": {
                "learning_rate": trained.learning_rate,
                "losses": trained.losses,
                "steps": trained.global_step,
                "loss": trained.training_loss,
                "train_seconds": round(trained.train_seconds, 2),
                "resumed_from": trained.resumed_from,
                "reused": trained.reused,
                "device": trained.device,
            },
            "champion_scores_reused": champion.reused,
            "encoded_texts": {
                "candidate": candidate.encoded_texts,
                "champion": champion.encoded_texts,
            },
            "timings": dict(clock),
            "run_id": run_id,
        }
        summary["accuracy_matrix"] = accuracy_matrix(registry, version.version)
        # What the model already knew: the lineage's sets, or on a first run the original data's.
        earlier = {es.key for es in [*lineage_sets, *prepared.base_eval_sets]}
        summary["learning"] = learning_summary(
            prepared.eval_sets,
            earlier,
            candidate.metrics,
            champion.metrics,
            summary["accuracy_matrix"],
            version.version,
        )
        publish_report_task(summary, root)
        logger.info(
            "Decision: %s. Version %d registered at %s; champion is version %d",
            gate.decision,
            version.version,
            summary["model_path"],
            summary["champion"],
        )
    return summary
