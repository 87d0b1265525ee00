"""Fine-tune the champion on new data plus replay, in a child process.

The loss follows the data structure: the one the champion recorded for that structure, else
CoSENTLoss for scored pairs and MultipleNegativesRankingLoss for pairs and triplets. New and
replay data of different structures train together as a multi-dataset, each with its own loss.
The learning rate is half the champion's recorded one (2e-5 when none is recorded), re-warmed.

The work directory is keyed by everything that determines the result (parent version, data
content, hyperparameters), so a retried task or a rerun after a crash resumes from the last
checkpoint, and a finished training is not repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from refit.config import TrainingConfig
from refit.dataio import content_hash
from refit.errors import ConfigError, TrainingError
from refit.records import DataRecord, ModelVersion, Record

DEFAULT_LOSSES = {
    "scored_pairs": "CoSENTLoss",
    "pairs": "MultipleNegativesRankingLoss",
    "triplets": "MultipleNegativesRankingLoss",
}
DEFAULT_LEARNING_RATE = 2e-5


class TrainResult(Record):
    model_dir: str
    work_dir: str
    learning_rate: float
    losses: dict[str, str]
    global_step: int
    training_loss: float
    train_seconds: float
    samples: int
    resumed_from: str | None = None
    device: str = "cpu"
    world_size: int = 1
    datasets: dict[str, int]
    # True when an earlier attempt had already finished this exact training (a rerun after a
    # crash): the candidate was taken from it and no training process ran.
    reused: bool = False


def choose_losses(
    structures: list[str], training: TrainingConfig, champion: ModelVersion
) -> dict[str, str]:
    recorded = champion.training.get("losses", {})
    chosen = {}
    for structure in structures:
        name = training.losses.get(structure) or recorded.get(structure)
        chosen[structure] = name or DEFAULT_LOSSES[structure]
    from refit.train_worker import loss_class

    for structure, name in chosen.items():
        try:
            loss_class(name)
        except ValueError:
            raise ConfigError(
                f"training.losses.{structure} names '{name}', which is not a "
                "sentence-transformers loss",
                fix="use a class name from sentence_transformers losses, e.g. CoSENTLoss or "
                "MultipleNegativesRankingLoss",
            ) from None
    return chosen


def choose_learning_rate(training: TrainingConfig, champion: ModelVersion) -> float:
    """Half the champion's recorded learning rate (2e-5 when none is recorded).

    The recorded rate is the one the lineage was fine-tuned with at full strength, carried
    from version to version, so every continued training uses half of it: the rate does not
    halve again with each delivery until the model stops learning.
    """
    if training.learning_rate is not None:
        return training.learning_rate
    recorded = champion.training.get("learning_rate")
    return recorded / 2 if recorded else DEFAULT_LEARNING_RATE


def recorded_learning_rate(used: float, parent: ModelVersion) -> float:
    """The rate a new version records for its children: the lineage's, else the one used."""
    return parent.training.get("learning_rate") or used


def training_sets(new: list[DataRecord], replay: list[DataRecord]) -> list[dict[str, str]]:
    """Group clean files by structure: same-structure replay mixes into the new data's batches."""
    by_structure: dict[str, list[DataRecord]] = {}
    for record in [*new, *replay]:
        by_structure.setdefault(record.structure, []).append(record)
    sets = []
    for structure, records in by_structure.items():
        sets.append(
            {
                "name": structure,
                "structure": structure,
                "paths": [r.clean_path for r in records],
                "rows": sum(r.rows for r in records),
            }
        )
    return sets


def fine_tune(
    base_model: Path,
    parent: ModelVersion,
    new: list[DataRecord],
    replay: list[DataRecord],
    training: TrainingConfig,
    runs_dir: Path,
    trust_remote_code: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    sets = training_sets(new, replay)
    losses = choose_losses([s["structure"] for s in sets], training, parent)
    learning_rate = choose_learning_rate(training, parent)
    settings = training.model_dump(mode="json") | {"learning_rate": learning_rate}
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "parent": parent.version,
                "base": str(base_model),
                "data": {s["name"]: [content_hash(p) for p in s["paths"]] for s in sets},
                "losses": losses,
                "settings": settings,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    work = runs_dir / f"train-{fingerprint}"
    work.mkdir(parents=True, exist_ok=True)
    output = work / "model"
    summary_file = output / "refit_training.json"

    reused = summary_file.is_file()
    if not reused:
        datasets = []
        if training.distill > 0 and replay:
            # First in the list so the champion (the base model, untouched yet) embeds them.
            texts = work / "distill-texts.parquet"
            if not texts.is_file():
                _distill_texts(replay, texts)
            datasets.append(
                {
                    "name": "distill",
                    "structure": "texts",
                    "path": str(texts),
                    "loss": "EmbedDistillLoss",
                    "weight": training.distill,
                }
            )
        for s in sets:
            path = work / f"train-{s['name']}.parquet"
            if not path.is_file():
                _concat_parquet(s["paths"], path)
            datasets.append(
                {
                    "name": s["name"],
                    "structure": s["structure"],
                    "path": str(path),
                    "loss": losses[s["structure"]],
                }
            )
        spec = {
            "base_model": str(base_model),
            "output_dir": str(output),
            "work_dir": str(work),
            "datasets": datasets,
            "learning_rate": learning_rate,
            "epochs": training.epochs,
            "max_steps": training.max_steps,
            "batch_size": training.batch_size,
            "warmup_ratio": training.warmup_ratio,
            "max_seq_length": training.max_seq_length,
            "freeze_embeddings": training.freeze_embeddings,
            "freeze_layers": training.freeze_layers,
            "checkpoint_steps": training.checkpoint_steps,
            "logging_steps": training.logging_steps,
            "seed": training.seed,
            "trust_remote_code": trust_remote_code,
        }
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        if output.exists():
            shutil.rmtree(output)
        try:
            run_worker(
                spec_path,
                work / "worker.log",
                training.timeout_s,
                on_event,
                processes=training_processes(training),
            )
        except BaseException:
            # A half-saved model must never be mistaken for a finished one; incomplete
            # checkpoints (no trainer_state.json) cannot be resumed from either.
            shutil.rmtree(output, ignore_errors=True)
            for checkpoint in (work / "checkpoints").glob("checkpoint-*"):
                if not (checkpoint / "trainer_state.json").is_file():
                    shutil.rmtree(checkpoint, ignore_errors=True)
            raise

    summary = json.loads(summary_file.read_text())
    if training.distill > 0 and replay:
        losses = losses | {"distill": f"EmbedDistillLoss x {training.distill:g}"}
    return TrainResult(
        model_dir=str(output),
        work_dir=str(work),
        learning_rate=learning_rate,
        losses=losses,
        global_step=summary["global_step"],
        training_loss=summary["training_loss"],
        train_seconds=summary["train_seconds"],
        samples=summary["samples"],
        resumed_from=summary.get("resumed_from"),
        device=summary.get("device", "cpu"),
        world_size=summary.get("world_size", 1),
        datasets={s["name"]: s["rows"] for s in sets}
        | ({"distill": summary["distill_texts"]} if summary.get("distill_texts") else {}),
        reused=reused,
    )


def _distill_texts(replay: list[DataRecord], out: Path) -> None:
    """The distinct texts of the replay rows, in a fixed order, one column ``sentence``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refit.dataio import TEXT_COLUMNS

    seen: dict[str, None] = {}
    for record in replay:
        table = pq.read_table(record.clean_path)
        for column in TEXT_COLUMNS[record.structure]:
            seen.update(dict.fromkeys(table[column].to_pylist()))
    tmp = out.with_suffix(".tmp")
    pq.write_table(pa.table({"sentence": pa.array(list(seen), pa.string())}), tmp)
    os.replace(tmp, out)


def _concat_parquet(paths: list[str], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    tmp = out.with_suffix(".tmp")
    pq.write_table(pa.concat_tables(tables, promote_options="permissive"), tmp)
    os.replace(tmp, out)


def training_processes(training: TrainingConfig) -> int:
    """How many training processes: as configured, else one per visible GPU."""
    if training.processes:
        return training.processes
    import torch

    return max(1, torch.cuda.device_count())


def run_worker(
    spec_path: Path,
    log_path: Path,
    timeout_s: float | None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Run the training process; stream its events; kill it (and its children) on timeout.

    With several processes, torchrun launches them (one per GPU); they share the process
    group, so a timeout stops them all.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "refit.train_worker", str(spec_path)]
    if processes > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={processes}",
            "-m",
            "refit.train_worker",
            str(spec_path),
        ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        last: dict[str, Any] = {}

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if not isinstance(event, dict):
                    continue
                last.clear()
                last.update(event)
                if on_event:
                    on_event(event)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise TrainingError(
                f"training timed out after {timeout_s:g} s and was stopped",
                file=str(log_path),
                fix="raise training.timeout_s, or lower training.epochs / max_steps; a rerun "
                "resumes from the last checkpoint",
            ) from None
        except BaseException:
            _kill(proc)
            raise
        reader.join(timeout=10)
    if code == 0 and last.get("event") == "done":
        return last
    if last.get("kind") == "non_finite_loss":
        raise TrainingError(
            last["message"] + "; nothing was promoted",
            file=str(log_path),
            fix="lower training.learning_rate, check the scores of the data, or resume from an "
            "earlier version with --from-version",
        )
    tail = _tail(log_path)
    message = last.get("message") if last.get("event") == "error" else None
    if code < 0:
        message = f"the training process was killed by signal {-code}"
    fix = "read the log above; a rerun resumes from the last checkpoint"
    if "No space left" in (message or "") + tail:
        fix = f"free disk space where the registry keeps its runs ({log_path.parent.parent})"
    raise TrainingError(
        f"training failed after {time.monotonic() - started:.0f} s: "
        f"{message or 'the training process exited with code ' + str(code)}"
        + (f"\n{tail}" if tail else ""),
        file=str(log_path),
        fix=fix,
    )


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune_task(
    base_model: Path,
    parent: ModelVersion,
    new: list[DataRecord],
    replay: list[DataRecord],
    training: TrainingConfig,
    runs_dir: Path,
    trust_remote_code: bool = False,
) -> TrainResult:
    logger = get_run_logger()
    state = {"last_logged": 0.0}
    # The training process reports to this task, which keeps a progress artifact current so
    # that the Prefect UI shows steps done of total and the current loss while it trains.
    progress_id = create_progress_artifact(
        progress=0.0, key="refit-training-progress", description="training: starting"
    )

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "start":
            if event.get("resume_from"):
                logger.info("Resuming training from %s", event["resume_from"])
            logger.info("Training on %s", event.get("device"))
        elif event.get("event") == "progress":
            now = time.monotonic()
            if now - state["last_logged"] >= 5 or event.get("step") == event.get("total"):
                state["last_logged"] = now
                with contextlib.suppress(Exception):  # the UI is informative, never fatal
                    update_progress_artifact(
                        progress_id,
                        progress=100.0 * event["step"] / max(1, event.get("total") or 1),
                        description=f"training: step {event['step']} of {event.get('total')}, "
                        f"loss {_fmt(event.get('loss'))}",
                    )
                logger.info(
                    "Training step %s of %s, loss %s, learning rate %s",
                    event.get("step"),
                    event.get("total"),
                    _fmt(event.get("loss")),
                    _fmt(event.get("learning_rate")),
                )

    result = fine_tune(
        base_model, parent, new, replay, training, runs_dir, trust_remote_code, on_event
    )
    with contextlib.suppress(Exception):
        update_progress_artifact(
            progress_id,
            progress=100.0,
            description=f"training: done, {result.global_step} steps, mean loss "
            f"{result.training_loss:.4f}",
        )
    logger.info(
        "Trained %d steps on %d rows in %.0f s (final mean loss %.4f); candidate at %s",
        result.global_step,
        result.samples,
        result.train_seconds,
        result.training_loss,
        result.model_dir,
    )
    return result


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
