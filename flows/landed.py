"""The unattended entry point: retrain on data that landed, each batch exactly once.

A data-landed event passes the batch's files; the nightly schedule passes none, and the flow
takes every file in the landing place that no run has processed yet. Files whose content the
ledger already holds are skipped, so a re-sent event or a copy under another name trains
nothing. A batch that fails validation is copied to quarantine with its report, and the run
fails with the validation error; the landing place is never changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from refit.config import load_config
from refit.errors import DataError
from refit.flows.retrain import retrain
from refit.landing import (
    Ledger,
    batch_id,
    default_quarantine,
    describe,
    list_files,
    quarantine,
    unique_by_content,
)
from refit.registry import Registry


@flow(name="refit-retrain-landed")
def retrain_landed(
    config_file: str,
    registry: str | None = None,
    files: list[str] | None = None,
) -> dict[str, Any]:
    """Retrain on the landed ``files`` (or, without them, on everything not yet processed)."""
    logger = get_run_logger()
    cfg = load_config(config_file, {"registry": registry})
    reg = Registry(cfg.registry)
    ledger = Ledger(reg)
    if files is None:
        if not cfg.landing.location:
            logger.info("No landing.location configured and no files given: nothing to do")
            return {"decision": "nothing new", "files": []}
        files = sorted(list_files(cfg.landing.location, cfg.landing.marker_suffix))
    batch = unique_by_content(describe(files), skip=ledger.done())
    if not batch:
        logger.info("Every landed file was already processed (by content hash): nothing to do")
        return {"decision": "nothing new", "files": []}
    batch_name = batch_id(batch)
    logger.info("Batch %s: %d new file(s): %s", batch_name, len(batch), [f.uri for f in batch])

    overrides = cfg.model_dump(mode="json")
    read = cfg.landing.read.model_dump(mode="json", exclude_unset=True)
    overrides["new_data"] = [{**read, "path": f.uri} for f in batch]
    try:
        summary = retrain(type(cfg).model_validate(overrides))
    except DataError as exc:
        target = quarantine(
            batch,
            cfg.landing.quarantine or default_quarantine(reg),
            batch_name,
            {
                "error": str(exc),
                "file": exc.file,
                "rows": exc.rows,
                "column": exc.column,
                "fix": exc.fix,
            },
        )
        ledger.record(batch, "quarantined", batch_name, quarantine=target)
        logger.error("Batch %s failed validation and was copied to %s", batch_name, target)
        raise
    ledger.record(batch, summary["decision"], batch_name, version=summary.get("version"))
    return {**summary, "batch": batch_name, "files": [f.uri for f in batch]}
