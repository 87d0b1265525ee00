"""Fetch the checkpoint to start from: the champion, a chosen version, or on a first run the model
named by ``--model``. Nothing is loaded here: the files are checked (safetensors only, no module
class from outside sentence-transformers) so that validation can still stop the run before any
model is in memory.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from refit.checkpoint import inspect_checkpoint, resolve_model, weights_identity
from refit.config import RefitConfig
from refit.errors import RegistryError
from refit.records import ModelVersion, Record
from refit.registry import Registry


class Checkpoint(Record):
    """Where training starts: a registered version, or a model about to become version 1."""

    model_dir: str
    version: int | None
    record: ModelVersion | None = None
    source: str
    identity: str
    max_seq_length: int | None = None
    note: str | None = None

    @property
    def is_new_registry(self) -> bool:
        return self.version is None


def fetch_checkpoint(cfg: RefitConfig, registry: Registry) -> Checkpoint:
    if not registry.exists():
        if not cfg.model:
            raise RegistryError(
                "this registry is empty and no model was named",
                file=str(registry.root),
                fix="pass --model (a local directory or a cached Hugging Face id) on the first "
                "run, or point --registry at an existing registry",
            )
        path = resolve_model(cfg.model)
        facts = inspect_checkpoint(path, cfg.trust_remote_code)
        return Checkpoint(
            model_dir=str(path),
            version=None,
            source=cfg.model,
            identity=weights_identity(path),
            max_seq_length=facts["max_seq_length"],
        )

    meta = registry.meta()
    note = None
    if cfg.model and cfg.model != meta["model"]:
        identity = weights_identity(resolve_model(cfg.model))
        known = {meta["identity"]} | {v.run.get("identity") for v in registry.versions()}
        if identity not in known:
            raise RegistryError(
                f"this registry holds the lineage of '{meta['model']}', and --model names "
                f"'{cfg.model}', a different model",
                file=str(registry.root),
                fix="leave out --model to continue from the champion, or pass another "
                "--registry for the other model",
            )
        note = (
            f"--model {cfg.model} has the weights of a version of this registry; runs continue "
            "from the champion (pass --from-version N to start from another version)"
        )
    version = cfg.from_version or registry.champion()
    record = registry.get(version)
    path = registry.model_dir(version)
    facts = inspect_checkpoint(path, cfg.trust_remote_code)
    return Checkpoint(
        model_dir=str(path),
        version=version,
        record=record,
        source=meta["model"],
        identity=record.run.get("identity", meta["identity"]),
        max_seq_length=facts["max_seq_length"],
        note=note,
    )


@task(name="fetch-checkpoint", cache_policy=NO_CACHE)
def fetch_checkpoint_task(cfg: RefitConfig, registry_root: str) -> Checkpoint:
    logger = get_run_logger()
    checkpoint = fetch_checkpoint(cfg, Registry(registry_root))
    if checkpoint.is_new_registry:
        logger.info(
            "New registry: %s will be registered as version 1 from %s",
            checkpoint.source,
            checkpoint.model_dir,
        )
    else:
        logger.info("Starting from version %d at %s", checkpoint.version, checkpoint.model_dir)
    if checkpoint.note:
        logger.warning(checkpoint.note)
    return checkpoint
