"""Running refit without a person at the keyboard: serving deployments and watching for data.

``refit serve`` serves one deployment per model (per registry) with a cron schedule and a
trigger on refit's data-landed event; the deployment's concurrency limit of 1 means two
retrains of the same model never overlap (a second waits as a queued run, or is cancelled).
``refit watch`` notices complete data files in a landing place and emits one event per batch.
Both need a real Prefect server: Prefect's temporary in-process server never runs schedules.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from refit.config import RefitConfig
from refit.errors import ConfigError, RefitError
from refit.landing import (
    LandedFile,
    Ledger,
    batch_id,
    describe,
    has_marker,
    list_files,
    unique_by_content,
)
from refit.redact import redact
from refit.registry import Registry, slug

EVENT = "refit.data.landed"
log = logging.getLogger("refit.watch")


def model_slug(cfg: RefitConfig) -> str:
    """A stable name for the model: the registry's model, else --model, else the registry dir."""
    registry = Registry(cfg.registry)
    if registry.exists():
        return registry.model_name()
    return slug(cfg.model or registry.root.name)


def check_server() -> str:
    """Return PREFECT_API_URL if a Prefect server answers there; otherwise explain and stop."""
    import httpx

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    fix = (
        "start a server with `prefect server start` and `export "
        "PREFECT_API_URL=http://127.0.0.1:4200/api`; Prefect's temporary server, used when "
        "PREFECT_API_URL is unset, never runs schedules or triggers"
    )
    if not url:
        raise RefitError("PREFECT_API_URL is not set, so there is no Prefect server", fix=fix)
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise RefitError(
            f"no Prefect server answers at {redact(url)} ({type(exc).__name__})", fix=fix
        ) from exc
    return url


def build_deployment(cfg: RefitConfig, config_file: Path):
    """The model's deployment: schedule, data-landed trigger and a concurrency limit of 1."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.schedules import Cron

    from refit.flows.landed import retrain_landed

    slug = model_slug(cfg)
    registry = str(Registry(cfg.registry).root)
    parameters = {"config_file": str(config_file.resolve()), "registry": registry}
    trigger = DeploymentEventTrigger(
        name=f"refit-{slug}-data-landed",
        expect={EVENT},
        match={"prefect.resource.id": f"refit.landing.{slug}"},
        parameters={**parameters, "files": "{{ event.payload.files }}"},
    )
    schedules = []
    if cfg.schedule.cron:
        try:
            schedules.append(Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone))
        except ValueError as exc:
            raise ConfigError(
                f"schedule: {exc}",
                fix="give schedule.cron as five fields, e.g. '0 2 * * *', and an IANA "
                "timezone such as 'Europe/Berlin'",
            ) from exc
    strategy = (
        ConcurrencyLimitStrategy.ENQUEUE
        if cfg.schedule.on_collision == "enqueue"
        else ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return retrain_landed.to_deployment(
        name=f"refit-{slug}",
        parameters=parameters,
        schedules=schedules,
        triggers=[trigger],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
        description=f"Retrain {slug} on landed data with replay; registry {registry}",
        tags=["refit", slug],
    )


class Watcher:
    """Finds complete, new data files in the landing place and announces them in batches."""

    def __init__(
        self,
        cfg: RefitConfig,
        emit: Callable[[str, list[LandedFile]], Any] | None = None,
    ) -> None:
        if not cfg.landing.location:
            raise ConfigError(
                "no landing place to watch",
                fix="pass LOCATION to `refit watch` or set landing.location in the config",
            )
        self.cfg = cfg
        self.location = cfg.landing.location
        self.ledger = Ledger(Registry(cfg.registry))
        self.slug = model_slug(cfg)
        self.emit = emit or self._emit_event
        self.sizes: dict[str, tuple[int, float]] = {}
        # Files already handled in this process, with the size they had: a file whose size
        # changes afterwards is looked at again.
        self.handled: dict[str, int] = {}

    def complete(self, now: float) -> dict[str, int]:
        """Files done arriving, with their sizes: a marker exists, or the size held for
        settle_seconds."""
        marker = self.cfg.landing.marker_suffix
        ready = {}
        for uri, size in list_files(self.location, marker).items():
            if marker:
                if has_marker(uri, marker):
                    ready[uri] = size
                continue
            last = self.sizes.get(uri)
            if last is None or last[0] != size:
                self.sizes[uri] = (size, now)
            elif now - last[1] >= self.cfg.landing.settle_seconds:
                ready[uri] = size
        return ready

    def check(self, now: float | None = None) -> list[LandedFile]:
        """One pass: announce the complete files whose content nobody has seen yet."""
        now = time.monotonic() if now is None else now
        ready = sorted(u for u, size in self.complete(now).items() if self.handled.get(u) != size)
        if not ready:
            return []
        described = describe(ready)
        for f in described:
            self.handled[f.uri] = f.size
        batch = unique_by_content(described, skip=self.ledger.seen())
        repeated = sorted(redact(f.uri) for f in described if f not in batch)
        if repeated:
            log.info("Not announced, their content was seen before: %s", repeated)
        if not batch:
            return []
        name = batch_id(batch)
        self.emit(name, batch)
        self.ledger.record(batch, "announced", name)
        log.info("Announced batch %s: %s", name, [redact(f.uri) for f in batch])
        return batch

    def _emit_event(self, name: str, batch: list[LandedFile]) -> None:
        from prefect.events import emit_event

        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": f"refit.landing.{self.slug}",
                "prefect.resource.name": f"landing place of {self.slug}",
                "refit.model": self.slug,
            },
            payload={
                "batch": name,
                "files": [f.uri for f in batch],
                "sha256": [f.sha256 for f in batch],
            },
        )

    def run(self, once: bool = False, stop: Callable[[], bool] | None = None) -> None:
        """Watch until stopped. Local directories use file-system notifications (watchfiles)
        with a periodic pass for settling; object stores are listed every poll_seconds."""
        settle = self.cfg.landing.settle_seconds
        self.check()
        if once:
            if settle or self.cfg.landing.marker_suffix:
                time.sleep(settle)
                self.check()
            return
        local = "://" not in self.location or self.location.startswith("file://")
        if local:
            from watchfiles import watch

            tick = max(0.2, min(settle or 1.0, self.cfg.landing.poll_seconds) / 2)
            for _changes in watch(
                self.location.removeprefix("file://"),
                rust_timeout=int(tick * 1000),
                yield_on_timeout=True,
                stop_event=None,
            ):
                self.check()
                if stop and stop():
                    return
        else:
            while not (stop and stop()):
                time.sleep(self.cfg.landing.poll_seconds)
                self.check()
