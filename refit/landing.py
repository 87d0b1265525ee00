"""The landing place: where new data files arrive, and the ledger that makes each batch count once.

A batch is identified by the content hashes of its files, never by their names: a re-sent
event, the same file copied under another name, or a restarted watcher finds the hashes in the
ledger and starts no second training. The ledger is an append-only JSON Lines file in the
registry, one line per file and state:

- ``announced``: the watcher emitted a data-landed event for it;
- ``promoted`` / ``rejected``: a run trained on it, with that outcome;
- ``quarantined``: it failed validation and was copied to quarantine with its report.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from refit.dataio import FORMATS, _suffix, content_hash
from refit.fsutil import append_line
from refit.redact import redact
from refit.registry import Registry, now

DONE_STATES = ("promoted", "rejected", "quarantined")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~", ".lock")


@dataclass(frozen=True)
class LandedFile:
    uri: str
    sha256: str
    size: int


class Ledger:
    def __init__(self, registry: Registry) -> None:
        self.path = registry.root / "ledger.jsonl"

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]

    def states(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for entry in self.entries():
            found.setdefault(entry["sha256"], set()).add(entry["state"])
        return found

    def done(self) -> set[str]:
        return {h for h, states in self.states().items() if states & set(DONE_STATES)}

    def seen(self) -> set[str]:
        return set(self.states())

    def record(self, files: list[LandedFile], state: str, batch: str, **extra: Any) -> None:
        for f in files:
            append_line(
                self.path,
                {
                    "at": now(),
                    "sha256": f.sha256,
                    "uri": redact(f.uri),
                    "size": f.size,
                    "batch": batch,
                    "state": state,
                    **extra,
                },
            )


def batch_id(files: list[LandedFile]) -> str:
    """The same files give the same batch id, whatever their names or order."""
    return hashlib.sha256("".join(sorted(f.sha256 for f in files)).encode()).hexdigest()[:16]


def is_data_file(path: str, marker_suffix: str | None = None) -> bool:
    name = posixpath.basename(path)
    if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
        return False
    if marker_suffix and name.endswith(marker_suffix):
        return False
    return _suffix(name) in FORMATS


def list_files(location: str, marker_suffix: str | None = None) -> dict[str, int]:
    """Data files under ``location`` with their sizes: ``{uri: size}``."""
    fs, root = url_to_fs(location)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    local = protocol in ("file", "local")
    found = {}
    for path, info in fs.find(root, detail=True).items():
        if info.get("type") == "file" and is_data_file(path, marker_suffix):
            found[path if local else fs.unstrip_protocol(path)] = int(info.get("size") or 0)
    return found


def has_marker(uri: str, marker_suffix: str) -> bool:
    fs, path = url_to_fs(uri + marker_suffix)
    return fs.exists(path)


def describe(uris: list[str]) -> list[LandedFile]:
    out = []
    for uri in uris:
        fs, path = url_to_fs(uri)
        out.append(LandedFile(uri=uri, sha256=content_hash(uri), size=int(fs.size(path) or 0)))
    return out


def unique_by_content(files: list[LandedFile], skip: set[str]) -> list[LandedFile]:
    """Drop files whose content was already seen (in ``skip``) or appears twice in the batch."""
    out, seen = [], set(skip)
    for f in sorted(files, key=lambda f: f.uri):
        if f.sha256 not in seen:
            seen.add(f.sha256)
            out.append(f)
    return out


def quarantine(
    files: list[LandedFile], destination: str, batch: str, report: dict[str, Any]
) -> str:
    """Copy a batch and its validation report to quarantine; the landing place is untouched."""
    target = posixpath.join(destination.rstrip("/"), batch)
    fs, root = url_to_fs(target)
    fs.makedirs(root, exist_ok=True)
    for f in files:
        name = posixpath.basename(f.uri.split("?", 1)[0])
        with fsspec.open(f.uri, "rb") as src, fs.open(posixpath.join(root, name), "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
    body = json.dumps({**report, "files": [redact(f.uri) for f in files]}, indent=2)
    with fs.open(posixpath.join(root, "report.json"), "w") as fh:
        fh.write(body + "\n")
    return target


def default_quarantine(registry: Registry) -> str:
    return str(registry.root / "quarantine")
