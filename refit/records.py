"""The small records that pass between steps and land in the registry.

Steps exchange these (paths, hashes, counts, metrics), never models or data frames.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from refit.redact import redact

Status = Literal["registered", "promoted", "rejected"]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SourceFile(Record):
    uri: str
    sha256: str
    rows: int | None = None

    @field_validator("uri")
    @classmethod
    def _no_secrets(cls, uri: str) -> str:
        return redact(uri)


class Finding(Record):
    """One thing validation noticed that did not stop the run."""

    level: Literal["info", "warning"]
    code: str
    message: str
    count: int = 0
    rows: list[int] = Field(default_factory=list)


class DataRecord(Record):
    """A validated training data set: where it came from and where its clean rows are."""

    name: str
    role: Literal["new", "original", "replay"]
    structure: str
    spec: dict[str, Any]
    files: list[SourceFile]
    rows: int
    clean_path: str | None = None
    # The clean rows kept in the registry once a version was trained on them: replay reads
    # these, so the lineage does not depend on the delivered files staying where they were.
    stored: str | None = None
    dropped: dict[str, int] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)


class EvalSet(Record):
    """An evaluation set, identified by the hash of its content and how it is read."""

    name: str
    kind: Literal["scored_pairs", "pairs", "triplets", "retrieval"]
    key: str
    primary_metric: str
    origin: str
    weak: bool = False
    rows: int = 0
    # Parquet files in the registry's dataset store: {"data": ...} or queries/corpus/qrels.
    files: dict[str, str]


class CheckResult(Record):
    eval_set: str
    metric: str
    rule: Literal["min", "max_drop", "min_gain", "empty"]
    threshold: float | None
    candidate: float | None
    champion: float | None
    delta: float | None
    passed: bool
    reason: str


class GateResult(Record):
    decision: Literal["promoted", "rejected"]
    checks: list[CheckResult]
    reasons: list[str]


class ModelVersion(Record):
    version: int
    status: Status
    parent: int | None = None
    created_at: str
    source: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    data: list[DataRecord] = Field(default_factory=list)
    eval_sets: list[EvalSet] = Field(default_factory=list)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    champion_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    gate: GateResult | None = None
    reasons: list[str] = Field(default_factory=list)
    run: dict[str, Any] = Field(default_factory=dict)
