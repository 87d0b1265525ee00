"""Validate data before any model is loaded.

Errors stop the run and name the file, the rows, the column and the fix: a missing or
unmappable column, a null, empty or whitespace-only text, a score that is not a number or lies
outside the declared range, a pair labelled as not a match in a pairs file (every pair is
trained as one), an unreadable file, no usable rows. Rows that are safe to drop are dropped and
counted: exact duplicates, pairs whose texts are equal after trimming and case folding, and
leakage into an evaluation set (the same pair, or a training anchor that is an
evaluation query). A retrieval corpus shared by training and evaluation is not leakage.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from refit.config import DataSpec, RefitConfig, RetrievalSpec
from refit.dataio import (
    ALIASES,
    NOT_STRING_ROWS,
    ROW,
    TEXT_COLUMNS,
    absolute,
    content_hash,
    expand,
    iter_batches,
    map_columns,
    read_columns,
)
from refit.errors import DataError
from refit.records import DataRecord, EvalSet, Finding, Record, SourceFile

SOURCE = "__file"
PYTHON_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
LONG_TEXT_WARNING = 0.10
# A held-out set smaller than this measures noise (a Spearman over 3 pairs moves in steps of
# 0.5) and would gate every later run: below it, no held-out set is split off.
MIN_HOLDOUT_ROWS = 10
LENGTH_SAMPLE = 2000
ROWS_IN_MESSAGE = 5  # rows a drop finding's message lists (the finding keeps the first 20)
PRIMARY_METRIC = {
    "scored_pairs": "spearman",
    "pairs": "ndcg@10",
    "retrieval": "ndcg@10",
    "triplets": "accuracy",
}


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Trim (every character Python calls whitespace) and case-fold: the key for equality.

    ASCII text (most training data) is lower-cased by Arrow in one pass. Other text is
    normalized (NFKC) and case-folded by Python, row by row, because lower-casing alone misses
    texts that are the same to a reader: "Straße" and "STRASSE", a final "ς" and "Σ", "é" as one
    character or as "e" and an accent, full-width letters.
    """
    if isinstance(texts, pa.ChunkedArray):
        return pa.chunked_array([_normalize(chunk) for chunk in texts.chunks], texts.type)
    return _normalize(texts)


def _normalize(texts: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim(texts, characters=PYTHON_WHITESPACE)
    lowered = pc.ascii_lower(trimmed)
    if not _may_hold_non_ascii(texts):
        return lowered
    other = pc.invert(pc.fill_null(pc.string_is_ascii(trimmed), True))
    if not pc.any(other).as_py():
        return lowered
    folded = [_fold(t) for t in pc.filter(trimmed, other).to_pylist()]
    return pc.replace_with_mask(lowered, other, pa.array(folded, texts.type))


def _text_bytes(texts: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The bytes of a text array's data buffer, for one scan that answers for every text.

    A scan is several times faster than testing each text. None where there is no single buffer
    to scan (a chunked array, not a text type). The buffer may hold bytes outside a sliced
    array, so a byte found means "look closer", never "found".
    """
    if isinstance(texts, pa.ChunkedArray) or not (
        pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)
    ):
        return None
    data = texts.buffers()[2]
    return np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)


def _may_hold_non_ascii(texts: pa.Array) -> bool:
    """False only when no byte of the texts is beyond ASCII (see ``_text_bytes``)."""
    data = _text_bytes(texts)
    return data is None or (data.size > 0 and int(data.max()) >= 0x80)


def _fold(text: str) -> str:
    """Unicode caseless matching key: NFKC, case folding, NFKC again (folding can denormalize)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.strip(PYTHON_WHITESPACE)


def _ordered(first: str, second: str) -> tuple[str, str]:
    return (first, second) if first <= second else (second, first)


def pair_keys(first: pa.Array, second: pa.Array) -> list[tuple[str, str]]:
    """Order-free keys of normalized text pairs: (a, b) and (b, a) are the same pair."""
    return [
        _ordered(a, b)
        for a, b in zip(first.to_pylist(), second.to_pylist(), strict=True)
        if a is not None and b is not None
    ]


def normalized_texts(table: pa.Table, structure: str) -> list[pa.Array]:
    """The text columns of a structure, normalized: computed once, shared by every check."""
    return [normalize(table[c]) for c in TEXT_COLUMNS[structure]]


@dataclass
class LeakageIndex:
    """What training rows must not repeat: evaluation pairs and evaluation queries.

    ``pairs`` holds order-free pairs of normalized texts, ``texts`` every text that occurs in
    one of them, and ``queries`` normalized queries. Add pairs with ``add_pairs`` so that the
    two stay in step: a row is looked up among the pairs only when both its texts are known,
    which for most rows is two hash lookups instead of building a key.
    """

    pairs: set[tuple[str, str]] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)
    queries: set[str] = field(default_factory=set)
    _arrays: dict[str, tuple[int, pa.Array]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.texts.update(t for key in self.pairs for t in key)

    def _array(self, name: str) -> pa.Array:
        """``texts`` or ``queries`` as an Arrow array, built once per size of the set.

        Replay checks batch after batch against the same index; the sets only ever grow, so
        their size tells whether the array is still current.
        """
        values = getattr(self, name)
        cached = self._arrays.get(name)
        if cached is None or cached[0] != len(values):
            cached = (len(values), pa.array(list(values), pa.string()))
            self._arrays[name] = cached
        return cached[1]

    @classmethod
    def from_eval_sets(cls, eval_sets: list[EvalSet]) -> LeakageIndex:
        index = cls()
        for es in eval_sets:
            if es.kind == "retrieval":
                queries = pq.read_table(es.files["queries"], columns=["text"])
                index.queries.update(normalize(queries["text"]).to_pylist())
                continue
            table = pq.read_table(es.files["data"])
            a, b = TEXT_COLUMNS[es.kind][:2]
            first = index.add_pairs(table[a], table[b])
            if es.kind == "pairs":
                index.queries.update(first.to_pylist())
        return index

    def copy(self) -> LeakageIndex:
        return LeakageIndex(set(self.pairs), set(self.texts), set(self.queries))

    def add_pairs(self, first: pa.Array, second: pa.Array) -> pa.Array:
        """Add the pairs of two text columns (not yet normalized); return the first, normalized."""
        na, nb = normalize(first), normalize(second)
        keys = pair_keys(na, nb)
        self.pairs.update(keys)
        self.texts.update(t for key in keys for t in key)
        return na

    def mask(
        self, table: pa.Table, structure: str, normalized: list[pa.Array] | None = None
    ) -> tuple[pa.Array, pa.Array]:
        """Boolean masks: rows whose pair is an evaluation pair; rows whose anchor is a query.

        ``normalized`` are the table's text columns already normalized (``normalized_texts``);
        without them, only the columns a non-empty side of the index needs are normalized.
        """
        a, b = TEXT_COLUMNS[structure][:2]
        none = np.zeros(table.num_rows, dtype=bool)
        if not self.pairs and not self.queries:
            return pa.array(none), pa.array(none)
        first = normalized[0] if normalized else normalize(table[a])
        by_pair = none.copy()
        if self.pairs:
            second = normalized[1] if normalized else normalize(table[b])
            texts = self._array("texts")
            known = pc.and_(pc.is_in(first, value_set=texts), pc.is_in(second, value_set=texts))
            candidates = np.flatnonzero(pc.fill_null(known, False).to_numpy(zero_copy_only=False))
            if len(candidates):
                at = pa.array(candidates)
                keys = zip(
                    pc.take(first, at).to_pylist(), pc.take(second, at).to_pylist(), strict=True
                )
                by_pair[candidates] = [_ordered(x, y) in self.pairs for x, y in keys]
        by_query = none
        if self.queries:
            queries = self._array("queries")
            by_query = pc.fill_null(pc.is_in(first, value_set=queries), False).to_numpy(
                zero_copy_only=False
            )
        return pa.array(by_pair), pa.array(by_query)


class Problems:
    """Collects every error in a data set before stopping, so one run reports them all.

    ``mask`` marks the rows of the current batch that have any problem, for callers that skip
    bad rows instead of stopping (replay of data that was valid when it was delivered).
    """

    ROWS_KEPT = 20

    def __init__(self, track_mask: bool = False) -> None:
        self.rows: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
        self.counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.track_mask = track_mask
        self.mask: pa.Array | None = None

    def add(
        self, uri: str, column: str, problem: str, fix: str, rows: pa.Array, where: pa.Array
    ) -> None:
        """Record ``problem`` for the rows of ``rows`` where the boolean ``where`` is true."""
        where = pc.fill_null(where, False)
        if self.track_mask:
            self.mask = where if self.mask is None else pc.or_(self.mask, where)
        hit = pc.filter(rows, where)
        if len(hit) == 0:
            return
        key = (uri, column, problem, fix)
        self.counts[key] += len(hit)
        kept = self.rows[key]
        if len(kept) < self.ROWS_KEPT:
            kept.extend(hit.to_pylist()[: self.ROWS_KEPT - len(kept)])

    def errors(self) -> list[DataError]:
        errors = []
        for key, count in self.counts.items():
            uri, column, problem, fix = key
            rows = self.rows[key]
            listed = f"; the first {len(rows)} are listed" if count > len(rows) else ""
            errors.append(
                DataError(
                    f"{problem} ({count} row{'s' if count != 1 else ''}{listed})",
                    file=uri,
                    rows=rows,
                    column=column,
                    fix=fix,
                )
            )
        return errors

    def raise_if_any(self) -> None:
        errors = self.errors()
        if not errors:
            return
        if len(errors) == 1:
            raise errors[0]
        first = errors[0]
        combined = DataError(
            f"{len(errors)} problems:\n  - " + "\n  - ".join(e.render() for e in errors)
        )
        combined.file, combined.rows, combined.column = first.file, first.rows, first.column
        combined.fix = "fix each problem as its line says"
        raise combined


def _text_column(
    batch: pa.RecordBatch, source: str, target: str, uri: str, problems: Problems
) -> pa.Array:
    col = batch.column(source)
    if pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type):
        col = col.dictionary_decode()  # pandas "category" columns of text
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        col = col.cast(pa.string())
    if not pa.types.is_string(col.type):
        problems.add(
            uri,
            source,
            f"holds {col.type} values, not text",
            f"map {target} to a text column (columns: {{{target}: ...}})",
            batch.column(ROW),
            pa.array(np.ones(len(col), dtype=bool)),
        )
        return pa.array([""] * len(col), pa.string())
    rows = batch.column(ROW)
    marked = (batch.schema.metadata or {}).get(f"{NOT_STRING_ROWS}{source}".encode())
    if marked:
        where = np.zeros(len(col), dtype=bool)
        where[json.loads(marked)] = True
        problems.add(
            uri,
            source,
            "holds a number, list, object or true/false where text belongs",
            "write the text as a JSON string in quotes, or remove these rows",
            rows,
            pa.array(where),
        )
    problems.add(
        uri,
        source,
        "text is null",
        "fill in the text or remove these rows",
        rows,
        pc.is_null(col),
    )
    blank = pc.and_(pc.is_valid(col), pc.equal(pc.utf8_trim(col, characters=PYTHON_WHITESPACE), ""))
    problems.add(
        uri,
        source,
        "text is empty or only whitespace",
        "fill in the text or remove these rows",
        rows,
        blank,
    )
    return col


def _numbers(col: pa.Array) -> tuple[np.ndarray, np.ndarray, str] | None:
    """A column read as numbers: (float64 values, missing mask, what they were read from).

    Text is trimmed of any whitespace, then parsed; a value that is not a number becomes NaN.
    Integers, floats, booleans and decimals are cast. Any other type gives None.
    """
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()  # pandas "category" columns
    if pa.types.is_string_view(col.type) or pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    if pa.types.is_string(col.type):
        # Whitespace around a number is not an error, whichever kind ("0.5\u00a0" as " 0.5").
        col = pc.utf8_trim(col, characters=PYTHON_WHITESPACE)
        try:
            # Every value a plain number (the common case): Arrow parses it in one pass.
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            missing = pc.is_null(col).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # Some are not: pandas marks each one, so that the error can name its rows.
            text = col.to_pandas()
            missing = (text.isna() | (text == "")).to_numpy()
            values = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype="float64")
        return values, missing, "text"
    if (
        pa.types.is_integer(col.type)
        or pa.types.is_floating(col.type)
        or pa.types.is_boolean(col.type)
        or pa.types.is_decimal(col.type)
    ):
        missing = pc.is_null(col).to_numpy(zero_copy_only=False)
        # Unsafe: a uint64 beyond 2**53 or a wide decimal rounds, and the range check follows.
        values = col.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return values, missing, str(col.type)
    return None


def _score_column(
    batch: pa.RecordBatch,
    source: str,
    spec: DataSpec,
    uri: str,
    problems: Problems,
    casts: set[str],
) -> pa.Array:
    col = batch.column(source)
    rows = batch.column(ROW)
    lo, hi = spec.score_range
    parsed = _numbers(col)
    if parsed is None:
        problems.add(
            uri,
            source,
            f"holds {col.type} values, not numbers",
            "write the score as a number",
            rows,
            pa.array(np.ones(len(col), dtype=bool)),
        )
        return pa.array(np.zeros(len(col), dtype="float32"))
    values, missing, kind = parsed
    casts.add(kind)
    problems.add(
        uri,
        source,
        "score is missing",
        f"give every row a number in [{lo:g}, {hi:g}]",
        rows,
        pa.array(missing),
    )
    values = np.asarray(values, dtype="float64")
    nan = np.isnan(values) & ~missing
    inf = np.isinf(values)
    problems.add(
        uri,
        source,
        "score is not a number",
        "write the score as a plain number such as 0.8 (no units, commas or text)",
        rows,
        pa.array(nan | inf),
    )
    finite = np.isfinite(values)
    outside = finite & ((values < lo) | (values > hi))
    if outside.any():
        seen = values[outside]
        problems.add(
            uri,
            source,
            f"score outside the declared range [{lo:g}, {hi:g}] (seen {seen.min():g} to "
            f"{seen.max():g})",
            "declare the real range in the data spec, e.g. score_range: [0, 5], or fix the rows",
            rows,
            pa.array(outside),
        )
    scaled = (np.where(finite, values, lo) - lo) / (hi - lo)
    return pa.array(scaled.astype("float32"))


def canonical_columns(
    batch: pa.RecordBatch,
    structure: str,
    mapping: dict[str, str],
    spec: DataSpec,
    uri: str,
    problems: Problems,
    casts: set[str],
) -> dict[str, pa.Array]:
    """One batch in refit's column names: checked texts and, for scored pairs, scores on 0-1."""
    columns = {
        target: _text_column(batch, mapping[target], target, uri, problems)
        for target in TEXT_COLUMNS[structure]
    }
    if structure == "scored_pairs":
        columns["score"] = _score_column(batch, mapping["score"], spec, uri, problems, casts)
    return columns


def equal_texts_mask(
    table: pa.Table, structure: str, normalized: list[pa.Array] | None = None
) -> pa.Array:
    """Rows whose texts are the same after trimming and case folding (they teach nothing)."""
    normalized = normalized or normalized_texts(table, structure)
    same = pc.equal(normalized[0], normalized[1])
    if structure == "triplets":
        same = pc.or_(
            same,
            pc.or_(pc.equal(normalized[1], normalized[2]), pc.equal(normalized[0], normalized[2])),
        )
    return pc.fill_null(same, False)


def _may_hold_newline(texts: pa.Array) -> bool:
    """False only when no text can hold a line break (see ``_text_bytes``); most files have
    no line break in any text."""
    data = _text_bytes(texts)
    return data is None or bool((data == 10).any())


def _swallowed_rows(
    texts: pa.Array,
    rows: pa.Array,
    column: str,
    delimiter: str,
    n_columns: int,
    uri: str,
    problems: Problems,
) -> None:
    """Find quoted CSV fields that ran over several lines that look like rows of their own.

    A quote opened and never closed (or closed rows later) makes the CSV reader join the
    following lines into one field, silently losing those rows. A line break inside a text is
    legal CSV, but a line inside a text that holds the delimiter as often as a row would is not
    a text: it is a swallowed row.
    """
    if not _may_hold_newline(texts):
        return
    multiline = pc.fill_null(pc.match_substring(texts, "\n"), False)
    if not pc.any(multiline).as_py():
        return
    suspicious = []
    for value in pc.filter(texts, multiline).to_pylist():
        lines = value.split("\n")[1:]
        suspicious.append(any(line.count(delimiter) >= n_columns - 1 for line in lines))
    where = np.zeros(len(texts), dtype=bool)
    where[np.flatnonzero(multiline.to_numpy(zero_copy_only=False))[np.array(suspicious)]] = True
    problems.add(
        uri,
        column,
        "a quoted text runs over several lines that look like rows of their own (a quote "
        "opened and not closed where it should be swallows the rows after it)",
        'close the quote, or double quotes that belong to the text (""), or, for a '
        "tab-separated file, name it .tsv so that quotes are plain text",
        rows,
        pa.array(where),
    )


POSITIVE_WORDS = ("true", "yes", "positive")


def _pair_label_columns(names: list[str], mapping: dict[str, str], structure: str) -> list[str]:
    """The unused columns of a pairs file named like a score or label ("label", "score", ...)."""
    if structure != "pairs":
        return []
    used = set(mapping.values())
    return [n for n in names if n not in used and n.lower() in ALIASES["score"]]


def _labels_not_positive(batch: pa.RecordBatch, column: str, uri: str, problems: Problems) -> None:
    """Refuse pairs labelled anything but positive: refit trains every pair as a positive.

    A file of (query, answer, label) rows with label 0 for wrong answers would otherwise teach
    the model that the wrong answers match. Positive is the number 1 in any spelling (1, 1.0,
    +1, 1e0, true as a boolean) or the word true, yes or positive.
    """
    col = batch.column(column)
    parsed = _numbers(col)
    positive = np.zeros(len(col), dtype=bool)
    if parsed is not None:
        values, _, kind = parsed
        positive = values == 1
        if kind == "text":
            text = col.cast(pa.string()).to_pandas().str.strip(PYTHON_WHITESPACE).str.lower()
            positive |= text.isin(POSITIVE_WORDS).to_numpy(dtype=bool)
    problems.add(
        uri,
        column,
        "labels the pair as not positive (0, false, empty or another value), but (anchor, "
        "positive) pairs are all trained as matches, so these rows would teach the opposite",
        "deliver only the matching pairs; for graded similarity name the columns sentence1, "
        "sentence2 and score (or map them in the data spec: columns: {sentence1: ..., "
        f"sentence2: ..., score: {column}}})",
        batch.column(ROW),
        pa.array(~positive),
    )


def read_clean(
    spec: DataSpec, problems: Problems, structure_hint: str | None = None
) -> tuple[str, pa.Table, list[SourceFile], list[Finding]]:
    """Read every file of a data set into canonical columns; collect errors in ``problems``."""
    files = expand(spec)
    structure: str | None = structure_hint
    tables: list[pa.Table] = []
    sources: list[SourceFile] = []
    casts: set[str] = set()
    extra_columns: set[str] = set()
    # Each file's sha256 is computed on a second thread while the files are parsed: hashing
    # releases the GIL, so the digest costs little more than the parse alone.
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit-sha256")
    digests = [hasher.submit(content_hash, ref.uri) for ref in files]
    ref = files[0]
    try:
        for index, ref in enumerate(files):
            file_structure, mapping, rows, labels = None, None, 0, []
            for batch in iter_batches(ref, spec):
                if mapping is None:
                    names = [n for n in batch.schema.names if n != ROW]
                    file_structure, mapping = map_columns(names, spec, ref.uri)
                    extra_columns.update(set(names) - set(mapping.values()))
                    labels = _pair_label_columns(names, mapping, file_structure)
                    if structure is None:
                        structure = file_structure
                    elif file_structure != structure:
                        raise DataError(
                            f"holds {file_structure} but the data set's other files hold "
                            f"{structure}",
                            file=ref.uri,
                            fix="put files of one structure in one data set, or set structure: "
                            "in the data spec",
                        )
                rows += batch.num_rows
                columns = canonical_columns(
                    batch, file_structure, mapping, spec, ref.uri, problems, casts
                )
                for label in labels:
                    _labels_not_positive(batch, label, ref.uri, problems)
                if ref.format == "csv":
                    delimiter = spec.delimiter or ","
                    for target in TEXT_COLUMNS[file_structure]:
                        _swallowed_rows(
                            columns[target],
                            batch.column(ROW),
                            mapping[target],
                            delimiter,
                            len(batch.schema.names) - 1,
                            ref.uri,
                            problems,
                        )
                columns[SOURCE] = pa.array(np.full(batch.num_rows, index, dtype="int32"))
                columns[ROW] = batch.column(ROW)
                tables.append(pa.table(columns))
            if mapping is None:
                # A header and no rows: the columns can still be checked.
                names = read_columns(ref, spec)
                if names:
                    file_structure, mapping = map_columns(names, spec, ref.uri)
                    structure = structure or file_structure
            sources.append(SourceFile(uri=ref.uri, sha256=digests[index].result(), rows=rows))
    except OSError as exc:  # removed, unreadable or replaced while refit read the data set
        raise DataError(
            f"cannot be read ({exc.strerror or exc})",
            file=ref.uri,
            fix="check that the file exists and is readable; a file moved or removed while "
            "refit ran is read again on the next run",
        ) from exc
    finally:
        hasher.shutdown(wait=True, cancel_futures=True)
    findings: list[Finding] = []
    if extra_columns:
        findings.append(
            Finding(
                level="info",
                code="extra_columns",
                message=f"columns not used for training: {sorted(extra_columns)}",
            )
        )
    if "score" in TEXT_COLUMNS.get(structure or "", ()) or structure == "scored_pairs":
        cast_from = sorted(c for c in casts if c != "float")
        if cast_from:
            findings.append(
                Finding(
                    level="info",
                    code="score_cast",
                    message=f"scores cast from {', '.join(cast_from)} to float32",
                )
            )
        if tuple(spec.score_range) != (0.0, 1.0):
            lo, hi = spec.score_range
            findings.append(
                Finding(
                    level="info",
                    code="score_rescaled",
                    message=f"scores rescaled from the declared range [{lo:g}, {hi:g}] to [0, 1]",
                )
            )
    if structure is None:  # JSON Lines files with no line at all: no columns, no rows
        raise DataError(
            "the file is empty (no rows)" if len(files) == 1 else "every file is empty (no rows)",
            file=spec.path,
            fix="deliver at least one row: one JSON object per line, with the column names as keys",
        )
    table = pa.concat_tables(tables) if tables else _empty(structure)
    return structure, table, sources, findings


def _empty(structure: str) -> pa.Table:
    columns = {c: pa.array([], pa.string()) for c in TEXT_COLUMNS[structure]}
    if structure == "scored_pairs":
        columns["score"] = pa.array([], pa.float32())
    columns[SOURCE] = pa.array([], pa.int32())
    columns[ROW] = pa.array([], pa.int64())
    return pa.table(columns)


def _conflicting_scores(table: pa.Table, structure: str, duplicate: np.ndarray) -> int:
    """How many duplicated scored pairs carry more than one score among their copies."""
    if structure != "scored_pairs" or not duplicate.any():
        return 0
    columns = list(TEXT_COLUMNS[structure])
    firsts = pc.unique(pc.filter(table[columns[0]], pa.array(duplicate)))
    copies = table.filter(pc.is_in(table[columns[0]], value_set=firsts))
    frame = copies.select([*columns, "score"]).to_pandas()
    return int((frame.groupby(columns)["score"].nunique() > 1).sum())


def _first_rows(rows: np.ndarray, files: np.ndarray, names: list[str]) -> str:
    """Where the first dropped rows are: "rows 4, 9", or "a.csv row 4, b.csv row 2" when the
    data set has several files (rows are numbered within each file)."""
    shown = ROWS_IN_MESSAGE
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    if len(names) <= 1:
        listed = ", ".join(str(r) for r in rows[:shown].tolist())
        return f"row{'s' if len(rows) > 1 else ''} {listed}{more}"
    short = _short_names(names)
    listed = ", ".join(
        f"{short[f]} row {r}"
        for f, r in zip(files[:shown].tolist(), rows[:shown].tolist(), strict=True)
    )
    return listed + more


def _short_names(uris: list[str]) -> list[str]:
    """Each file's path below the folder all of them share: "x.csv", or "sub1/x.csv" and
    "sub2/x.csv" when names repeat in subfolders."""
    parts = [u.split("/") for u in uris]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return ["/".join(p[shared:]) for p in parts]


def drop_unusable(
    table: pa.Table, structure: str, leakage: LeakageIndex | None, names: list[str] | None = None
) -> tuple[pa.Table, list[Finding], dict[str, int]]:
    """Drop exact duplicates, pairs of equal texts and leakage into an evaluation set.

    Each row is counted once, under the first reason in that order: a duplicate of a leaking
    pair counts as a duplicate (its first copy as leakage), a leaking pair of equal texts as
    equal texts. The texts are normalized once for both later checks, and the table is filtered
    once. ``names`` are the data set's file URIs, to say which file a listed row is in.
    """
    columns = list(TEXT_COLUMNS[structure])
    duplicate = table.select(columns).to_pandas().duplicated(keep="first").to_numpy()
    normalized = normalized_texts(table, structure)
    equal = equal_texts_mask(table, structure, normalized).to_numpy(zero_copy_only=False)
    equal = equal & ~duplicate
    leak = by_pair = np.zeros(table.num_rows, dtype=bool)
    if leakage is not None:
        pair_mask, query_mask = leakage.mask(table, structure, normalized)
        by_pair = pair_mask.to_numpy(zero_copy_only=False)
        leak = (by_pair | query_mask.to_numpy(zero_copy_only=False)) & ~(duplicate | equal)
    rows = table[ROW].to_numpy()
    files = table[SOURCE].to_numpy()
    findings: list[Finding] = []
    counts: dict[str, int] = {}
    conflicts = _conflicting_scores(table, structure, duplicate)
    for code, where, message in (
        (
            "duplicates",
            duplicate,
            "{n} exact duplicate {rows} dropped (the first copy is kept)"
            + (
                f"; {conflicts} of these pairs have copies with different scores, and the "
                "first copy's score is the one trained on"
                if conflicts
                else ""
            ),
        ),
        (
            "equal_texts",
            equal,
            "{n} {rows} dropped whose texts are the same after trimming and case folding (they "
            "teach nothing)",
        ),
        (
            "leakage",
            leak,
            "{n} {rows} dropped that leak into an evaluation set ({pair} equal to an evaluation "
            "pair, {query} with an anchor that is an evaluation query)",
        ),
    ):
        n = int(where.sum())
        if not n:
            continue
        pair = int((by_pair & where).sum())
        counts[code] = n
        findings.append(
            Finding(
                level="warning",
                code=code,
                message=message.format(
                    n=n, rows="row" if n == 1 else "rows", pair=pair, query=n - pair
                )
                + f"; {_first_rows(rows[where], files[where], names or [])}",
                count=n,
                rows=rows[where][:20].tolist(),
            )
        )
    if counts:
        table = table.filter(pa.array(~(duplicate | equal | leak)))
    return table, findings, counts


def long_text_finding(
    table: pa.Table, structure: str, tokenizer_dir: str | None, max_seq_length: int | None
) -> Finding | None:
    """The share of texts longer than the model's max_seq_length, from a fixed sample."""
    if not tokenizer_dir or not max_seq_length or table.num_rows == 0:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts: list[str] = []
    for col in TEXT_COLUMNS[structure]:
        texts.extend(table[col].to_pylist())
    rng = np.random.default_rng(0)
    if len(texts) > LENGTH_SAMPLE:
        texts = [texts[i] for i in rng.choice(len(texts), LENGTH_SAMPLE, replace=False)]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    share = float(np.mean(np.array(lengths) > max_seq_length))
    level = "warning" if share > LONG_TEXT_WARNING else "info"
    message = f"{share:.1%} of texts are longer than max_seq_length {max_seq_length} tokens"
    if level == "warning":
        message += (
            " and will be truncated: raise training.max_seq_length, or split long texts into "
            "passages"
        )
    return Finding(level=level, code="long_texts", message=message, count=int(share * 100))


def validate_training_data(
    spec: DataSpec,
    role: str,
    out_path: Path,
    leakage: LeakageIndex | None = None,
    tokenizer_dir: str | None = None,
    max_seq_length: int | None = None,
) -> DataRecord:
    """Validate one training data set and write its clean rows to ``out_path`` (Parquet)."""
    problems = Problems()
    structure, table, sources, findings = read_clean(spec, problems)
    problems.raise_if_any()
    total = table.num_rows
    table, more, dropped = drop_unusable(table, structure, leakage, [f.uri for f in sources])
    findings += more
    if table.num_rows == 0:
        if dropped:
            counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in dropped.items())
            raise DataError(
                f"no usable rows left: all {total} rows were dropped ({counts})",
                file=spec.path,
                fix="deliver rows that are new, not duplicates, and not part of an evaluation set",
            )
        raise DataError(
            "no usable rows: the data has a header but no data rows",
            file=spec.path,
            fix="deliver at least one row under the header",
        )
    long = long_text_finding(table, structure, tokenizer_dir, max_seq_length)
    if long:
        findings.append(long)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path)
    return DataRecord(
        name=spec.name or _stem(spec.path),
        role=role,
        structure=structure,
        spec=absolute(spec).model_dump(mode="json"),
        files=sources,
        rows=table.num_rows,
        clean_path=str(out_path),
        dropped=dropped,
        findings=findings,
    )


def _stem(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    for ch in "*?[":
        name = name.replace(ch, "")
    return name.split(".", 1)[0] or "data"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def load_eval_set(
    spec: DataSpec | RetrievalSpec, out_dir: Path, origin: str = "config"
) -> tuple[EvalSet, dict[str, Path]]:
    """Validate an evaluation set named in the config and write it as Parquet files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, RetrievalSpec):
        return _load_retrieval(spec, out_dir, origin)
    problems = Problems()
    structure, table, sources, _ = read_clean(spec, problems)
    problems.raise_if_any()
    if table.num_rows < 2:
        raise DataError(
            f"the evaluation set has {table.num_rows} usable row(s); a metric needs at least 2",
            file=spec.path,
            fix="add rows to the evaluation set",
        )
    if (
        structure == "scored_pairs"
        and pc.min_max(table["score"]).as_py()["min"] == pc.min_max(table["score"]).as_py()["max"]
    ):
        raise DataError(
            "every score in the evaluation set is the same, so a correlation with it is "
            "undefined and no candidate could pass or fail on it",
            file=spec.path,
            column="score",
            fix="use an evaluation set whose scores vary",
        )
    name = spec.name or _stem(spec.path)
    key = _key(structure, [s.sha256 for s in sources], spec.columns, spec.score_range)
    path = out_dir / f"{key}-data.parquet"
    pq.write_table(table.drop_columns([SOURCE]), path)
    es = EvalSet(
        name=name,
        kind=structure,
        key=key,
        primary_metric=PRIMARY_METRIC[structure],
        origin=origin,
        rows=table.num_rows,
        files={"data": str(path)},
    )
    return es, {"data": path}


def _load_retrieval(
    spec: RetrievalSpec, out_dir: Path, origin: str
) -> tuple[EvalSet, dict[str, Path]]:
    def read(path: str, wanted: dict[str, tuple[str, ...]]) -> tuple[pa.Table, str, str]:
        ds = DataSpec(path=path)
        refs = expand(ds)
        tables, hashes = [], []
        for ref in refs:
            hashes.append(content_hash(ref.uri))
            for batch in iter_batches(ref, ds):
                names = {n.lower(): n for n in batch.schema.names}
                cols = {}
                for target, options in wanted.items():
                    found = next((names[o] for o in options if o in names), None)
                    if found is None:
                        if target == "title":
                            cols[target] = pa.array([""] * batch.num_rows, pa.string())
                            continue
                        raise DataError(
                            f"missing column '{options[0]}' (it has {batch.schema.names})",
                            file=ref.uri,
                            column=options[0],
                            fix="use the BEIR layout: queries/corpus with _id and text, "
                            "qrels with query-id, corpus-id, score",
                        )
                    col = batch.column(found)
                    cols[target] = col.cast(pa.string()) if target != "score" else col
                cols[ROW] = batch.column(ROW)
                tables.append(pa.table(cols))
        return pa.concat_tables(tables), refs[0].uri, hashes[0]

    queries, q_uri, q_hash = read(spec.queries, {"id": ("_id", "id"), "text": ("text",)})
    corpus, c_uri, c_hash = read(
        spec.corpus, {"id": ("_id", "id"), "title": ("title",), "text": ("text",)}
    )
    qrels, r_uri, r_hash = read(
        spec.qrels,
        {
            "query": ("query-id", "query_id", "qid"),
            "doc": ("corpus-id", "corpus_id", "doc_id"),
            "score": ("score",),
        },
    )
    problems = Problems()
    qrels = qrels.filter(pc.greater(pc.cast(qrels["score"], pa.float64()), 0))
    q_ids = set(queries["id"].to_pylist())
    d_ids = set(corpus["id"].to_pylist())
    unknown_q = pc.invert(pc.is_in(qrels["query"], value_set=pa.array(list(q_ids), pa.string())))
    unknown_d = pc.invert(pc.is_in(qrels["doc"], value_set=pa.array(list(d_ids), pa.string())))
    problems.add(
        r_uri,
        "query-id",
        "names a query that the queries file does not have",
        "add the query or remove the judgement",
        qrels[ROW],
        unknown_q,
    )
    problems.add(
        r_uri,
        "corpus-id",
        "names a document that the corpus does not have",
        "add the document or remove the judgement",
        qrels[ROW],
        unknown_d,
    )
    used = set(qrels["query"].to_pylist())
    queries = queries.filter(pc.is_in(queries["id"], value_set=pa.array(list(used), pa.string())))
    corpus_text = pc.binary_join_element_wise(
        pc.fill_null(corpus["title"], ""), pc.fill_null(corpus["text"], ""), " "
    )
    for table, uri, column, text in (
        (queries, q_uri, "text", queries["text"]),
        (corpus, c_uri, "title/text", corpus_text),
    ):
        blank = pc.fill_null(pc.equal(pc.utf8_trim(text, characters=PYTHON_WHITESPACE), ""), True)
        problems.add(
            uri,
            column,
            "text is empty or null",
            "fill in the text or remove the row",
            table[ROW],
            blank,
        )
    problems.raise_if_any()
    if qrels.num_rows == 0:
        raise DataError(
            "no relevance judgements with a score above 0",
            file=r_uri,
            fix="list (query-id, corpus-id, score) rows with score 1",
        )
    key = _key("retrieval", q_hash, c_hash, r_hash)
    paths = {
        "queries": out_dir / f"{key}-queries.parquet",
        "corpus": out_dir / f"{key}-corpus.parquet",
        "qrels": out_dir / f"{key}-qrels.parquet",
    }
    pq.write_table(queries.select(["id", "text"]), paths["queries"])
    pq.write_table(corpus.select(["id", "title", "text"]), paths["corpus"])
    pq.write_table(qrels.select(["query", "doc"]), paths["qrels"])
    es = EvalSet(
        name=spec.name or _stem(spec.queries.rsplit("/", 1)[0] if "/" in spec.queries else "ir"),
        kind="retrieval",
        key=key,
        primary_metric="ndcg@10",
        origin=origin,
        rows=queries.num_rows,
        files={k: str(v) for k, v in paths.items()},
    )
    return es, paths


def split_holdout(
    record: DataRecord, fraction: float, seed: int, out_dir: Path, origin: str, weak: bool = False
) -> tuple[DataRecord, EvalSet, dict[str, Path]]:
    """Split a held-out evaluation set off clean data, grouped by the first text (the anchor).

    One anchor never lands on both sides, so the held-out score is not inflated by training on
    the same query with another positive.
    """
    table = pq.read_table(record.clean_path)
    first = TEXT_COLUMNS[record.structure][0]
    groups = normalize(table[first])
    unique = pc.unique(groups).to_pylist()
    if len(unique) < 2:
        raise DataError(
            f"cannot hold out an evaluation set: all rows share one {first}",
            file=record.files[0].uri if record.files else record.name,
            fix="name an evaluation set in eval_data, or deliver more varied rows",
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    sizes = pd.Series(groups.to_pandas()).value_counts()
    target = max(1, round(fraction * table.num_rows))
    chosen, total = [], 0
    for i in order:
        if total >= target or len(chosen) >= len(unique) - 1:
            break
        chosen.append(unique[i])
        total += int(sizes[unique[i]])
    held = pc.is_in(groups, value_set=pa.array(chosen, pa.string()))
    heldout = table.filter(held).drop_columns([SOURCE])
    out_dir.mkdir(parents=True, exist_ok=True)
    train = table.filter(pc.invert(held))
    pq.write_table(train, record.clean_path)
    key = _key("holdout", record.structure, heldout.to_pydict())
    path = out_dir / f"{key}-data.parquet"
    pq.write_table(heldout, path)
    es = EvalSet(
        name=f"{record.name}-heldout",
        kind=record.structure,
        key=key,
        primary_metric=PRIMARY_METRIC[record.structure],
        origin=origin,
        weak=weak,
        rows=heldout.num_rows,
        files={"data": str(path)},
    )
    return record.model_copy(update={"rows": train.num_rows}), es, {"data": path}


class PreparedData(Record):
    """Everything a run trains and evaluates on, validated, as records with file paths."""

    new: list[DataRecord]
    original: list[DataRecord]
    eval_sets: list[EvalSet]
    base_eval_sets: list[EvalSet]

    def findings(self) -> list[tuple[str, Finding]]:
        return [(d.name, f) for d in [*self.original, *self.new] for f in d.findings]


def prepare_data(
    cfg: RefitConfig,
    lineage_sets: list[EvalSet],
    run_dir: Path,
    tokenizer_dir: str | None,
    max_seq_length: int | None,
    first_run: bool,
) -> PreparedData:
    """Validate the evaluation sets, then the original and the new data against them.

    Held-out sets are split off the new data (and, on a first run, off the original data) when
    the config names no evaluation set that covers them.
    """
    eval_dir = run_dir / "eval"
    config_sets = []
    for spec in cfg.eval_data:
        es, _ = load_eval_set(
            spec, eval_dir, origin=f"named in the config (covers {spec.covers} data)"
        )
        config_sets.append((spec.covers, es))
    eval_sets = _unique_names(lineage_sets + [es for _, es in config_sets])
    base_sets = [es for covers, es in config_sets if covers == "original"]
    covered = {covers for covers, _ in config_sets}
    leakage = LeakageIndex.from_eval_sets(eval_sets)
    fraction, seed = cfg.evaluation.holdout_fraction, cfg.replay.seed

    original = []
    for i, spec in enumerate(cfg.original_data):
        record = validate_training_data(
            spec,
            "original",
            run_dir / f"original-{i}.parquet",
            leakage,
            tokenizer_dir,
            max_seq_length,
        )
        if first_run and "original" not in covered and record.rows * fraction >= MIN_HOLDOUT_ROWS:
            record, es, _ = split_holdout(
                record,
                fraction,
                seed,
                eval_dir,
                origin="held out of the original data: a weaker signal than a real test set, "
                "since it comes from the same distribution the model was trained on",
                weak=True,
            )
            base_sets.append(es)
            eval_sets.append(es)
            leakage = LeakageIndex.from_eval_sets(eval_sets)
        original.append(record)

    new = []
    for i, spec in enumerate(cfg.new_data):
        record = validate_training_data(
            spec, "new", run_dir / f"new-{i}.parquet", leakage, tokenizer_dir, max_seq_length
        )
        if "new" not in covered and fraction > 0:
            if record.rows * fraction < MIN_HOLDOUT_ROWS:
                record.findings.append(
                    Finding(
                        level="warning",
                        code="no_holdout",
                        message=f"only {record.rows} rows: too few to hold out "
                        f"{MIN_HOLDOUT_ROWS} for evaluation, so this delivery is checked only "
                        "on the lineage's evaluation sets; name an evaluation set for it in "
                        "eval_data, or deliver more rows",
                    )
                )
            else:
                record, es, _ = split_holdout(
                    record,
                    fraction,
                    seed,
                    eval_dir,
                    origin=f"held out of the new data {record.name}",
                )
                eval_sets.append(es)
        new.append(record)
    return PreparedData(
        new=new, original=original, eval_sets=_unique_names(eval_sets), base_eval_sets=base_sets
    )


def _unique_names(eval_sets: list[EvalSet]) -> list[EvalSet]:
    """One entry per content key; a name used by two different sets gets the key appended."""
    by_key: dict[str, EvalSet] = {}
    for es in eval_sets:
        by_key.setdefault(es.key, es)
    names: set[str] = set()
    out = []
    for es in by_key.values():
        if es.name in names:
            es = es.model_copy(update={"name": f"{es.name}@{es.key[:6]}"})
        names.add(es.name)
        out.append(es)
    return out


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data_task(
    cfg: RefitConfig,
    lineage_sets: list[EvalSet],
    run_dir: Path,
    tokenizer_dir: str | None,
    max_seq_length: int | None,
    first_run: bool,
) -> PreparedData:
    logger = get_run_logger()
    prepared = prepare_data(cfg, lineage_sets, run_dir, tokenizer_dir, max_seq_length, first_run)
    for record in [*prepared.original, *prepared.new]:
        logger.info(
            "Validated %s data %s: %d %s rows kept%s",
            record.role,
            record.name,
            record.rows,
            record.structure,
            "".join(f", {n} {k} dropped" for k, n in record.dropped.items()),
        )
    for name, finding in prepared.findings():
        (logger.warning if finding.level == "warning" else logger.info)(
            "%s: %s", name, finding.message
        )
    for es in prepared.eval_sets:
        logger.info("Evaluation set %s (%s, %d rows): %s", es.name, es.kind, es.rows, es.origin)
    return prepared
