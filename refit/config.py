"""Run configuration: a YAML file validated by pydantic, with command-line flags on top.

The YAML mirrors these models one to one. Unknown keys are errors (a typo must not silently
fall back to a default), and every validation error names the key path and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refit.errors import ConfigError

Structure = Literal["scored_pairs", "pairs", "triplets"]
STRUCTURES: tuple[str, ...] = ("scored_pairs", "pairs", "triplets")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadSpec(Strict):
    """How to read a data set's files: format, delimiter, column names, structure, score range.

    ``columns`` maps refit's column names (sentence1, sentence2, score, anchor, positive,
    negative) to the names in the file; columns are found by name, never by position.
    """

    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = None
    delimiter: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    structure: Structure | None = None
    score_range: tuple[float, float] = (0.0, 1.0)

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, columns: dict[str, str]) -> dict[str, str]:
        known = {"sentence1", "sentence2", "score", "anchor", "positive", "negative"}
        unknown = sorted(set(columns) - known)
        if unknown:
            raise ValueError(
                f"columns maps unknown names {unknown}; the keys must be refit's names "
                f"{sorted(known)} and the values the names in your file"
            )
        return columns

    @field_validator("score_range")
    @classmethod
    def _ordered(cls, rng: tuple[float, float]) -> tuple[float, float]:
        if not rng[0] < rng[1]:
            raise ValueError(f"score_range {list(rng)} must be [low, high] with low < high")
        return rng


class DataSpec(ReadSpec):
    """One data set: a file, a directory or a glob, local or any fsspec URL, and how to read it."""

    path: str
    name: str | None = None
    # For an evaluation set: which data it measures, the new delivery or the original data.
    covers: Literal["new", "original"] = "new"


class RetrievalSpec(Strict):
    """A retrieval evaluation set in BEIR layout: queries, corpus and relevance judgements."""

    name: str | None = None
    queries: str
    corpus: str
    qrels: str
    covers: Literal["new", "original"] = "new"


class ReplayConfig(Strict):
    # A fraction of the new data's rows (0 < size <= 1, so 1.0 replays as many rows as are new)
    # or a row count (size > 1); 0 turns replay off.
    size: float = 0.2
    seed: int = 42

    @field_validator("size")
    @classmethod
    def _non_negative(cls, size: float) -> float:
        if size < 0:
            raise ValueError("replay size must be 0 (off), a fraction below 1, or a row count")
        return size


class TrainingConfig(Strict):
    learning_rate: float | None = Field(None, gt=0)  # None: half the recorded rate
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=2)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    max_seq_length: int | None = Field(None, ge=8)
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    checkpoint_steps: int = Field(200, ge=1)
    logging_steps: int = Field(10, ge=1)
    losses: dict[Structure, str] = Field(default_factory=dict)
    # Weight of an extra distillation loss on the replay texts: 1 - cosine similarity between
    # the candidate's embedding of each text and the champion's. It holds old data where the
    # champion put it (less forgetting, less re-embedding for vector indexes); 0 turns it off.
    distill: float = Field(0.0, ge=0.0)
    seed: int = 42
    timeout_s: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    # Training processes (torch distributed, launched with torchrun): None means one per
    # visible GPU, or a single process without a GPU. Each process takes batch_size / processes
    # examples per step, so the global batch and the schedule stay those of one process.
    processes: int | None = Field(None, ge=1)


class EvaluationConfig(Strict):
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(None, ge=8)
    # Texts drawn (fixed seed) from the evaluation sets to measure embedding drift between
    # champion and candidate; 0 turns the measurement off.
    drift_probe_size: int = Field(1000, ge=0)


class GateCheck(Strict):
    """One rule on one metric of one evaluation set. ``eval_set: "*"`` means every set."""

    eval_set: str
    metric: str = "primary"
    min: float | None = None
    max_drop: float | None = Field(None, ge=0.0)
    min_gain: float | None = None

    @model_validator(mode="after")
    def _one_rule_at_least(self) -> GateCheck:
        if self.max_drop is not None and self.min_gain is not None:
            raise ValueError("a gate check takes max_drop or min_gain, not both")
        if self.min is None and self.max_drop is None and self.min_gain is None:
            raise ValueError(
                f"gate check on {self.eval_set}/{self.metric} has no rule: "
                "give min, max_drop or min_gain"
            )
        return self


class LandingConfig(Strict):
    """Where new data lands and how refit decides that a file is complete."""

    # A local directory or an fsspec URL (s3://bucket/prefix); None: no landing place.
    location: str | None = None
    # A file counts as complete when its size has not changed for this long...
    settle_seconds: float = Field(5.0, ge=0.0)
    # ...or, when set, once a marker file with this suffix exists beside it (x.csv.done).
    marker_suffix: str | None = None
    # How often object stores (and, as a fallback, local directories) are listed.
    poll_seconds: float = Field(10.0, gt=0.0)
    # Batches that fail validation are copied here with their report (default: in the registry).
    quarantine: str | None = None
    # How to read landed files (columns, score range...), as for a new_data entry.
    read: ReadSpec = ReadSpec()


class ScheduleConfig(Strict):
    cron: str | None = "0 2 * * *"  # nightly at 02:00; None: no schedule
    timezone: str = "UTC"
    # A trigger while a run of the same model is going: wait as a queued run, or cancel it.
    on_collision: Literal["enqueue", "cancel"] = "enqueue"


DEFAULT_GATE = (GateCheck(eval_set="*", metric="primary", max_drop=0.01),)


class RefitConfig(Strict):
    model: str | None = None
    registry: str = "./.refit/registry"
    from_version: int | None = Field(None, ge=1)
    new_data: list[DataSpec] = Field(default_factory=list)
    original_data: list[DataSpec] = Field(default_factory=list)
    eval_data: list[DataSpec | RetrievalSpec] = Field(default_factory=list)
    replay: ReplayConfig = ReplayConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    # None (the key left out) means the default gate; an empty list means promote nothing.
    gate: list[GateCheck] | None = None
    # Opt-in for checkpoints that would import code outside sentence-transformers.
    trust_remote_code: bool = False
    # How long a run waits for another run on the same registry to finish before giving up.
    lock_timeout_s: float = Field(0.0, ge=0.0)
    landing: LandingConfig = LandingConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @field_validator("new_data", "original_data", mode="before")
    @classmethod
    def _paths_as_specs(cls, value: Any) -> Any:
        return [_as_spec(v) for v in _as_list(value)]

    @field_validator("eval_data", mode="before")
    @classmethod
    def _eval_specs(cls, value: Any) -> Any:
        return [_as_spec(v) for v in _as_list(value)]

    @model_validator(mode="after")
    def _distill_needs_replay(self) -> RefitConfig:
        if self.training.distill > 0 and self.replay.size == 0:
            raise ValueError(
                "training.distill holds the replay texts near the champion's embeddings, but "
                "replay.size is 0: set replay.size above 0, or training.distill to 0"
            )
        return self

    @property
    def gate_checks(self) -> tuple[GateCheck, ...]:
        return DEFAULT_GATE if self.gate is None else tuple(self.gate)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _as_spec(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


def _with_template(configured: Any, path: Any) -> Any:
    """A path given as a flag keeps how the config says to read the data (columns, range)."""
    specs = _as_list(configured)
    if (
        not isinstance(path, str)
        or not specs
        or not isinstance(specs[0], dict)
        or "path" not in specs[0]  # a retrieval set has no reading instructions to keep
    ):
        return path
    template = {k: v for k, v in specs[0].items() if k not in ("path", "name")}
    return {**template, "path": path}


def _relative_to(base: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Resolve the config file's relative local paths against its own folder.

    A config means the same files wherever the command runs from (a scheduler's working
    directory is rarely the one the config was written in). URLs and absolute paths stay as
    they are; ``model`` is resolved only where that path exists (it may be a hub id).
    """

    def fix(value: Any, must_exist: bool = False) -> Any:
        if not isinstance(value, str) or "://" in value or Path(value).expanduser().is_absolute():
            return value
        candidate = base / value
        if must_exist and not candidate.exists():
            return value
        return str(candidate)

    def fix_spec(spec: Any) -> Any:
        if isinstance(spec, str):
            return fix(spec)
        if isinstance(spec, dict):
            return {
                k: fix(v) if k in ("path", "queries", "corpus", "qrels") else v
                for k, v in spec.items()
            }
        return spec

    out = dict(raw)
    if "registry" in out:
        out["registry"] = fix(out["registry"])
    if "model" in out:
        out["model"] = fix(out["model"], must_exist=True)
    for key in ("new_data", "original_data", "eval_data"):
        if key in out:
            out[key] = [fix_spec(v) for v in _as_list(out[key])]
    if isinstance(out.get("landing"), dict):
        out["landing"] = {
            k: fix(v) if k in ("location", "quarantine") else v for k, v in out["landing"].items()
        }
    return out


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RefitConfig:
    """Read ``path`` (optional), apply ``overrides`` (flags; None values are ignored), validate.

    Relative paths in the file are relative to the file's folder; relative paths given as
    flags are relative to the working directory.
    """
    raw: dict[str, Any] = {}
    source = "command-line flags"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config file ({exc.strerror})",
                file=source,
                fix="pass an existing YAML file to --config",
            ) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"not valid YAML: {exc}", file=source, fix="correct the YAML syntax"
            ) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                "the top level must be a mapping of keys such as new_data, training, gate",
                file=source,
                fix="see the configuration section of the README",
            )
        raw = _relative_to(Path(path).resolve().parent, loaded or {})
    for key, value in (overrides or {}).items():
        if value is None or value == []:
            continue
        if key in ("new_data", "original_data", "eval_data") and isinstance(value, list):
            value = [_with_template(raw.get(key), path) for path in value]
        raw[key] = value
    try:
        return RefitConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid configuration: {problems}",
            file=source,
            fix="correct these keys (the README lists every key with its default)",
        ) from exc
