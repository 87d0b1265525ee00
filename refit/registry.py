"""The embedded model registry: one model's versions, its champion alias and its lineage.

Layout under the registry root::

    registry.json          which model this registry holds (set once, on the first run)
    aliases.json           {"champion": N}, replaced atomically
    promotions.jsonl       append-only log of every decision and rollback
    versions/N/            one directory per version, moved into place by one rename:
        model/             the Sentence Transformers checkpoint (safetensors)
        version.json       status, parent, training config, data lineage, metrics, gate
        README.md          model card
        scores/KEY.json    this version's metrics per evaluation set (reused, never recomputed)
    datasets/KEY/          evaluation sets kept for later runs (held-out splits included)
    runs/ID/               per-run scratch: clean data, training checkpoints, logs

Every write is a rename of a finished file or directory, so a crash leaves the old state or the
new one. One run at a time holds ``.lock``; readers (``refit models``) need no lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from refit.errors import RegistryError
from refit.faults import crash_point
from refit.fsutil import append_line, fsync_dir, read_json, write_json
from refit.records import DataRecord, EvalSet, ModelVersion


def slug(source: str) -> str:
    """A short, stable name for a model: the last part of its path or id, lower-case, dashes.

    Used in Prefect artifact keys, deployment names and event resources, which allow only
    lower-case letters, digits and dashes.
    """
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "model"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # -- layout ---------------------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / str(version)

    def model_dir(self, version: int) -> Path:
        return self.version_dir(version) / "model"

    def run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model_name(self) -> str:
        """The slug of the model this registry holds."""
        return slug(self.meta()["model"])

    def exists(self) -> bool:
        return (self.root / "registry.json").is_file()

    # -- locking --------------------------------------------------------------------------
    @contextmanager
    def lock(self, timeout_s: float = 0.0) -> Iterator[None]:
        """Hold the registry for one run; a second run waits ``timeout_s`` then is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        holder = self.root / ".lock.holder"
        lock = FileLock(str(self.root / ".lock"), timeout=timeout_s)
        try:
            lock.acquire()
        except Timeout:
            who = holder.read_text().strip() if holder.exists() else "another process"
            raise RegistryError(
                f"another refit run holds this registry ({who})",
                file=str(self.root),
                fix="wait for that run to finish, or set lock_timeout_s in the config to wait "
                "for it automatically",
            ) from None
        try:
            holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    # -- reading --------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        if not self.exists():
            raise RegistryError(
                "no registry here yet",
                file=str(self.root),
                fix="run `refit retrain --model MODEL` once to register the model as version 1",
            )
        return read_json(self.root / "registry.json")

    def version_numbers(self) -> list[int]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.versions_dir.iterdir()
            if p.name.isdigit() and (p / "version.json").is_file()
        )

    def get(self, version: int) -> ModelVersion:
        path = self.version_dir(version) / "version.json"
        if not path.is_file():
            known = self.version_numbers()
            raise RegistryError(
                f"version {version} does not exist (versions: {known or 'none'})",
                file=str(self.root),
                fix="pick one of the listed versions (`refit models`)",
            )
        return ModelVersion.model_validate(read_json(path))

    def versions(self) -> list[ModelVersion]:
        return [self.get(n) for n in self.version_numbers()]

    def champion(self) -> int:
        path = self.root / "aliases.json"
        if not path.is_file():
            raise RegistryError(
                "the registry has no champion",
                file=str(self.root),
                fix="run `refit retrain --model MODEL` to register one",
            )
        return int(read_json(path)["champion"])

    def lineage(self, version: int) -> list[ModelVersion]:
        """The version and its ancestors, newest first."""
        chain, seen = [], set()
        current: int | None = version
        while current is not None and current not in seen:
            seen.add(current)
            record = self.get(current)
            chain.append(record)
            current = record.parent
        return chain

    def replay_pool(self, version: int) -> list[DataRecord]:
        """Every training data set the version learned from, through all its ancestors."""
        pool: dict[str, DataRecord] = {}
        for record in reversed(self.lineage(version)):
            for data in record.data:
                if data.role in ("new", "original"):
                    key = "|".join(sorted(f.sha256 for f in data.files))
                    pool.setdefault(key, data)
        return list(pool.values())

    def lineage_eval_sets(self, version: int) -> list[EvalSet]:
        sets: dict[str, EvalSet] = {}
        for record in reversed(self.lineage(version)):
            for es in record.eval_sets:
                sets.setdefault(es.key, es)
        return list(sets.values())

    def scores(self, version: int, key: str) -> dict[str, float] | None:
        path = self.version_dir(version) / "scores" / f"{key}.json"
        return read_json(path)["metrics"] if path.is_file() else None

    def promotions(self) -> list[dict[str, Any]]:
        path = self.root / "promotions.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- writing (call under lock) --------------------------------------------------------
    def init(self, source: str, identity: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(
            self.root / "registry.json",
            {"model": source, "identity": identity, "created_at": now(), "format": 1},
        )

    def staging_dir(self) -> Path:
        path = self.versions_dir / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def add_version(self, staging: Path, record: ModelVersion) -> int:
        """Move a finished staging directory into place as the next version, in one rename."""
        numbers = self.version_numbers()
        version = (numbers[-1] + 1) if numbers else 1
        record = record.model_copy(update={"version": version})
        write_json(staging / "version.json", record.model_dump(mode="json"))
        crash_point("while-registering")
        os.rename(staging, self.version_dir(version))
        fsync_dir(self.versions_dir)
        return version

    def save_scores(self, version: int, key: str, name: str, metrics: dict[str, float]) -> None:
        write_json(
            self.version_dir(version) / "scores" / f"{key}.json",
            {"eval_set": name, "metrics": metrics, "computed_at": now()},
        )

    def set_champion(self, version: int, event: str, reason: str = "", **extra: Any) -> None:
        previous = None
        if (self.root / "aliases.json").is_file():
            previous = self.champion()
        write_json(
            self.root / "aliases.json",
            {"champion": version, "updated_at": now()},
            before_replace=lambda: crash_point("while-switching-alias"),
        )
        self.log(event, version=version, previous_champion=previous, reason=reason, **extra)

    def log(self, event: str, **fields: Any) -> None:
        append_line(self.root / "promotions.jsonl", {"at": now(), "event": event, **fields})

    def dataset_dir(self, key: str) -> Path:
        return self.root / "datasets" / key

    def store_dataset(self, key: str, files: dict[str, Path]) -> dict[str, str]:
        """Keep an evaluation set's files under its content key (written once, then reused)."""
        target = self.dataset_dir(key)
        if not target.is_dir():
            tmp = target.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            for role, path in files.items():
                shutil.copyfile(path, tmp / f"{role}.parquet")
            try:
                os.rename(tmp, target)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not target.is_dir():
                    raise
            fsync_dir(target.parent)
        return {role: str(target / f"{role}.parquet") for role in files}

    def recover(self) -> list[str]:
        """Finish what a crashed run left between two atomic steps; returns what was done.

        A version directory appears by one rename and the alias by another, so a crash can only
        leave a version registered whose alias switch or log line never happened. A promoted
        version newer than the champion gets the alias it was granted; a missing log line is
        written. Staging directories of crashed runs are removed.
        """
        self.clean_stale()
        done: list[str] = []
        versions = self.versions()
        if not versions:
            return done
        if not (self.root / "aliases.json").is_file():
            self.set_champion(versions[0].version, "register", reason="completed after a crash")
            done.append(f"made version {versions[0].version} champion (registration interrupted)")
        logged = {(e["event"], e.get("version")) for e in self.promotions()}
        champion = self.champion()
        for v in versions:
            if v.status == "promoted" and ("promote", v.version) not in logged:
                if v.version > champion:
                    self.set_champion(
                        v.version,
                        "promote",
                        reason="completed after a crash: " + "; ".join(v.reasons),
                    )
                    champion = v.version
                    done.append(f"completed the promotion of version {v.version}")
            elif v.status == "rejected" and ("reject", v.version) not in logged:
                self.log("reject", version=v.version, reason="; ".join(v.reasons), recovered=True)
                done.append(f"logged the rejection of version {v.version}")
        return done

    def clean_stale(self, older_than_s: float = 0.0) -> None:
        """Remove staging directories left by crashed runs (they were never versions)."""
        if not self.versions_dir.is_dir():
            return
        cutoff = time.time() - older_than_s
        for p in self.versions_dir.iterdir():
            if p.name.startswith(".staging-") and p.stat().st_mtime <= cutoff:
                shutil.rmtree(p, ignore_errors=True)
