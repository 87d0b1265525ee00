"""Sample replay data: a uniform sample of everything the champion learned from.

The pool is every training data set in the champion's lineage (its original data and each
delivery since). The sample is streamed through the files in record batches with a bottom-k
reservoir: every row gets a random key from a generator seeded by ``seed`` and the k smallest
keys win, so memory is bounded by k plus one batch and the same seed gives the same sample.
Rows equal to a row of the new data or of an evaluation set never enter the sample.

Keys are drawn before anything else is done with a batch. Once the reservoir is full, a row
whose key is above the k-th smallest so far can never win, so only the rows under it are
checked and compared; past the first k rows that is a shrinking few per batch (about
k * ln(N / k) rows over a pool of N), and sampling costs little more than reading the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from refit.config import DataSpec
from refit.dataio import NOT_STRING_ROWS, ROW, TEXT_COLUMNS, expand, iter_batches, map_columns
from refit.errors import DataError
from refit.records import DataRecord, EvalSet, Finding, SourceFile
from refit.tasks.validate_data import (
    LeakageIndex,
    Problems,
    canonical_columns,
    equal_texts_mask,
    normalized_texts,
)

KEY = "__key"


def replay_size(size: float, new_rows: int) -> int:
    """A fraction of the new data (0 < size <= 1) or a row count (size > 1); 0 turns it off."""
    if size <= 0:
        return 0
    return int(size) if size > 1 else max(1, round(size * new_rows))


def exclusion_index(new_data: list[DataRecord], leakage: LeakageIndex) -> LeakageIndex:
    """Evaluation pairs and queries plus every pair of the new data."""
    index = leakage.copy()
    for record in new_data:
        table = pq.read_table(record.clean_path)
        a, b = TEXT_COLUMNS[record.structure][:2]
        index.add_pairs(table[a], table[b])
    return index


class Reservoir:
    """Keeps the k rows with the smallest random keys, per structure, across all batches."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.tables: dict[str, pa.Table] = {}

    @property
    def threshold(self) -> float:
        """The largest key that can still win: the k-th smallest so far, once k rows are in."""
        keys = [t[KEY].to_numpy() for t in self.tables.values()]
        held = sum(len(k) for k in keys)
        if held < self.k:
            return np.inf
        return float(np.max(np.concatenate(keys)))

    def offer(self, structure: str, table: pa.Table) -> None:
        if structure in self.tables:
            table = pa.concat_tables([self.tables[structure], table], promote_options="permissive")
        self.tables[structure] = table
        self._trim()

    def _trim(self) -> None:
        keys = np.concatenate([t[KEY].to_numpy() for t in self.tables.values()])
        if len(keys) <= self.k:
            return
        threshold = np.partition(keys, self.k - 1)[self.k - 1]
        for structure, table in list(self.tables.items()):
            self.tables[structure] = table.filter(pc.less_equal(table[KEY], threshold))


def _could_win(
    batch: pa.RecordBatch, keys: np.ndarray, threshold: float
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The rows of a batch whose keys are not above the reservoir's threshold."""
    if threshold == np.inf:
        return batch, keys
    metadata = batch.schema.metadata or {}
    if any(name.startswith(NOT_STRING_ROWS.encode()) for name in metadata):
        # Those marks are positions in the whole batch; keep it whole so they stay true.
        return batch, keys
    keep = keys <= threshold
    return batch.filter(pa.array(keep)), keys[keep]


def sample_replay(
    pool: list[DataRecord],
    k: int,
    seed: int,
    exclude: LeakageIndex,
    out_dir: Path,
) -> list[DataRecord]:
    """Draw ``k`` rows uniformly from the pool; returns one record per structure sampled."""
    if k == 0 or not pool:
        return []
    rng = np.random.default_rng(seed)
    reservoir = Reservoir(k)
    excluded = dropped = 0
    for dataset in pool:
        spec = DataSpec.model_validate(dataset.spec)
        if dataset.stored and Path(dataset.stored).is_file():
            # The registry's copy: canonical columns, scores already on 0-1.
            spec = DataSpec(path=dataset.stored, structure=dataset.structure)
        try:
            refs = expand(spec)
        except DataError as exc:
            raise DataError(
                f"replay data of '{dataset.name}' (in the champion's lineage) cannot be read: "
                f"{exc.problem}",
                file=spec.path,
                fix="restore the file, or set replay.size: 0 to train without replay",
            ) from exc
        for ref in refs:
            mapping = None
            for batch in iter_batches(ref, spec):
                if mapping is None:
                    names = [n for n in batch.schema.names if n != ROW]
                    structure, mapping = map_columns(names, spec, ref.uri)
                keys = rng.random(batch.num_rows)
                batch, keys = _could_win(batch, keys, reservoir.threshold)
                if batch.num_rows == 0:
                    continue
                problems = Problems(track_mask=True)
                table = pa.table(
                    canonical_columns(batch, structure, mapping, spec, ref.uri, problems, set())
                )
                normalized = normalized_texts(table, structure)
                bad = equal_texts_mask(table, structure, normalized)
                if problems.mask is not None:
                    bad = pc.or_(bad, problems.mask)
                by_pair, by_query = exclude.mask(table, structure, normalized)
                leaks = pc.or_(by_pair, by_query)
                skip = pc.or_(leaks, bad)
                excluded += pc.sum(leaks).as_py() or 0
                dropped += pc.sum(bad).as_py() or 0
                table = table.append_column(
                    "__origin", pa.array([dataset.name] * table.num_rows, pa.string())
                )
                table = table.append_column(KEY, pa.array(keys))
                reservoir.offer(structure, table.filter(pc.invert(skip)))

    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for structure, table in sorted(reservoir.tables.items()):
        if table.num_rows == 0:
            continue
        table = table.sort_by(KEY)
        per_origin = table.group_by("__origin").aggregate([("__origin", "count")]).to_pylist()
        path = out_dir / f"replay-{structure}.parquet"
        pq.write_table(table.drop_columns([KEY, "__origin"]), path)
        findings = [
            Finding(
                level="info",
                code="replay_sources",
                message="rows per source: "
                + ", ".join(f"{r['__origin']}: {r['__origin_count']}" for r in per_origin),
            )
        ]
        if excluded and not records:  # reported once, with the first record
            findings.append(
                Finding(
                    level="info",
                    code="replay_excluded",
                    message=f"{excluded} drawn pool {'row' if excluded == 1 else 'rows'} left out: "
                    "equal to new or evaluation rows",
                    count=excluded,
                )
            )
        if dropped:
            findings.append(
                Finding(
                    level="warning",
                    code="replay_invalid",
                    message=f"{dropped} drawn pool {'row' if dropped == 1 else 'rows'} skipped as "
                    "invalid or with equal texts; "
                    "if the count is large, a replay file changed since it was delivered: check "
                    "the files of the lineage",
                    count=dropped,
                )
            )
        records.append(
            DataRecord(
                name=f"replay-{structure}",
                role="replay",
                structure=structure,
                spec={"pool": [d.name for d in pool], "seed": seed, "requested": k},
                files=[SourceFile(uri=f.uri, sha256=f.sha256) for d in pool for f in d.files],
                rows=table.num_rows,
                clean_path=str(path),
                findings=findings,
            )
        )
    return records


@task(name="sample-replay", cache_policy=NO_CACHE)
def sample_replay_task(
    pool: list[DataRecord],
    k: int,
    seed: int,
    new_data: list[DataRecord],
    eval_sets: list[EvalSet],
    out_dir: Path,
) -> list[DataRecord]:
    logger = get_run_logger()
    if k == 0:
        logger.info("Replay is off (replay.size is 0)")
        return []
    exclude = exclusion_index(new_data, LeakageIndex.from_eval_sets(eval_sets))
    records = sample_replay(pool, k, seed, exclude, out_dir)
    got = sum(r.rows for r in records)
    logger.info(
        "Replay: %d of %d requested rows from %d data set(s) of the lineage (%s)",
        got,
        k,
        len(pool),
        ", ".join(f"{r.structure}: {r.rows}" for r in records) or "none",
    )
    if got < k:
        logger.warning(
            "The replay pool gave only %d of %d rows: the lineage holds little data; deliver "
            "the data the model was first trained on with --original-data to replay more",
            got,
            k,
        )
    return records
