"""Reading data files: CSV, TSV, JSONL and Parquet, local or through any fsspec URL.

Files are read in record batches with pyarrow so that memory stays bounded by the batch size.
Every batch carries a ``__row`` column with the 1-based data row number in its file (the header
is not counted), so that any later error can point at the row. Text columns are read as
strings, never inferred: "NA", "null" or "1e5" in a text column stay text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from refit.config import DataSpec
from refit.errors import DataError

ROW = "__row"
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
BATCH_ROWS = 65_536
# Schema metadata prefix: offsets of JSON values that were not strings in a string column.
NOT_STRING_ROWS = "refit.not_string."
INT64 = (-(2**63), 2**63 - 1)
# pyarrow parses CSV in blocks and a row may not span two of them: this is the longest row.
CSV_BLOCK_BYTES = 1 << 24
PANDAS_INDEX = re.compile(r"__index_level_\d+__")

# Other names a column is commonly given; a name refit knows is always taken first.
ALIASES: dict[str, tuple[str, ...]] = {
    "sentence1": ("sentence1", "sentence_1", "text1", "s1"),
    "sentence2": ("sentence2", "sentence_2", "text2", "s2"),
    "score": ("score", "label", "similarity"),
    "anchor": ("anchor", "query", "question"),
    "positive": ("positive", "pos", "document", "passage", "answer"),
    "negative": ("negative", "neg", "hard_negative"),
}
STRUCTURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "scored_pairs": ("sentence1", "sentence2", "score"),
    "triplets": ("anchor", "positive", "negative"),
    "pairs": ("anchor", "positive"),
}
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "scored_pairs": ("sentence1", "sentence2"),
    "triplets": ("anchor", "positive", "negative"),
    "pairs": ("anchor", "positive"),
}


@dataclass(frozen=True)
class FileRef:
    """One concrete file of a data set, with the format it will be read as."""

    uri: str
    format: str


def expand(spec: DataSpec) -> list[FileRef]:
    """Resolve a file, a directory or a glob into a sorted list of data files."""
    try:
        fs, root = url_to_fs(spec.path)
    except (ValueError, ImportError) as exc:
        raise DataError(
            f"cannot open this location ({exc})",
            file=spec.path,
            fix="give a local path or an fsspec URL whose filesystem package is installed",
        ) from exc
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]

    def to_uri(p: str) -> str:
        if protocol in ("file", "local"):
            return p  # absolute: the lineage must resolve from any working directory
        return spec.path if p == root else fs.unstrip_protocol(p)

    if any(ch in spec.path for ch in "*?["):
        base = re.split(r"[*?\[]", root, maxsplit=1)[0].rsplit("/", 1)[0]
        asks_for_hidden = "/." in "/" + root[len(base) :]  # a pattern such as data/.h*/*.csv
        paths = sorted(p for p in fs.glob(root) if asks_for_hidden or not is_hidden(p, base))
    elif fs.isdir(root):
        paths = sorted(p for p in fs.find(root) if _suffix(p) in FORMATS and not is_hidden(p, root))
    elif fs.exists(root):
        paths = [root]
    else:
        raise DataError(
            "no such file or directory",
            file=spec.path,
            fix="check the path; a directory or a glob such as 'data/*.csv' also works",
        )
    files = []
    for p in paths:
        if fs.isdir(p):
            continue
        if protocol in ("file", "local"):
            if p != root:
                _check_local_member(p, root)
            if not os.path.exists(p):
                raise DataError(
                    "cannot be read: it is a link to nothing, or was removed while refit read "
                    "the data set",
                    file=p,
                    fix="restore the file or remove the link, then run again",
                )
            if not os.path.isfile(p):
                raise DataError(
                    "is not a regular file (a pipe, socket or device): reading it could wait "
                    "forever",
                    file=p,
                    fix="move it out of the data directory, or name the data files themselves",
                )
        files.append(FileRef(to_uri(p), spec.format or _format_of(p)))
    if not files:
        raise DataError(
            "matches no data files (.csv, .tsv, .jsonl, .parquet)",
            file=spec.path,
            fix="point at the files themselves or set format: in the data spec",
        )
    return files


def is_hidden(path: str, root: str = "") -> bool:
    """Whether a file is one that tools keep beside data, not data.

    Its name, or the name of a folder between ``root`` and it, starts with a dot:
    .ipynb_checkpoints/, macOS ._ files, .DS_Store, editors' swap files.
    """
    relative = path[len(root) :] if root and path.startswith(root) else path.rsplit("/", 1)[-1]
    # A name starting with ".." is not skipped: it is refused as a path traversal attempt.
    parts = [part for part in relative.split("/") if part]
    return any(part.startswith(".") and not part.startswith("..") for part in parts)


def _check_local_member(path: str, root: str) -> None:
    """A file found in a directory or by a glob must be a plain member of that place.

    Refuses names that try path traversal (backslashes, '..' parts, control characters) and
    symbolic links that lead outside the directory, so that a file dropped into a landing
    directory cannot make refit read (or later copy) something elsewhere on the machine.
    """
    name = os.path.basename(path)
    if (
        "\\" in name
        or ".." in name.replace("\\", "/").split("/")
        or any(ord(c) < 32 for c in name)
        or name.startswith("..")
    ):
        raise DataError(
            f"the file name {name!r} looks like a path traversal attempt",
            file=path,
            fix="rename the file to a plain name (letters, digits, '-', '_', '.')",
        )
    if os.path.islink(path):
        base = root if os.path.isdir(root) else os.path.dirname(root.split("*", 1)[0])
        target = os.path.realpath(path)
        inside = os.path.realpath(base)
        if os.path.commonpath([target, inside]) != inside:
            raise DataError(
                f"is a symbolic link to {target}, outside {inside}",
                file=path,
                fix="copy the data into the directory instead of linking to it, or name the "
                "file itself in the data spec",
            )


def absolute(spec: DataSpec) -> DataSpec:
    """The same spec with a local path made absolute, as it is recorded in the lineage."""
    fs, root = url_to_fs(spec.path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return spec.model_copy(update={"path": root})
    return spec


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    for ext in (".gz", ".bz2", ".zst", ".xz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _format_of(path: str) -> str:
    fmt = FORMATS.get(_suffix(path))
    if fmt is None:
        raise DataError(
            f"unknown file type '{_suffix(path) or '(none)'}'",
            file=path,
            fix="use .csv, .tsv, .jsonl or .parquet, or set format: in the data spec",
        )
    return fmt


def content_hash(uri: str) -> str:
    """sha256 of the file's bytes, streamed."""
    digest = hashlib.sha256()
    with fsspec.open(uri, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_columns(ref: FileRef, spec: DataSpec) -> list[str]:
    """The column names of a file, without reading its rows."""
    if ref.format == "parquet":
        with fsspec.open(ref.uri, "rb") as fh:
            return _data_columns(list(pq.ParquetFile(fh).schema_arrow.names))
    if ref.format == "jsonl":
        for batch in iter_batches(ref, spec, batch_rows=1):
            return [n for n in batch.schema.names if n != ROW]
        return []
    return _csv_header(ref, spec)[0]


def iter_batches(
    ref: FileRef, spec: DataSpec, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows in batches, each with a ``__row`` column of 1-based row numbers."""
    reader = {"parquet": _parquet_batches, "jsonl": _jsonl_batches}.get(ref.format, _csv_batches)
    start = 1
    for batch in reader(ref, spec, batch_rows):
        if start == 1:
            reserved = [n for n in batch.schema.names if n.startswith("__")]
            if reserved:
                raise DataError(
                    f"column names starting with '__' are reserved by refit: {reserved}",
                    file=ref.uri,
                    column=reserved[0],
                    fix="rename those columns",
                )
        rows = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
        start += batch.num_rows
        yield batch.append_column(ROW, rows)


def _delimiter(ref: FileRef, spec: DataSpec) -> str:
    return spec.delimiter or ("\t" if ref.format == "tsv" else ",")


def _csv_header(ref: FileRef, spec: DataSpec) -> tuple[list[str], str]:
    delimiter = _delimiter(ref, spec)
    with fsspec.open(ref.uri, "rb", compression="infer") as fh:
        first = fh.readline(1 << 20)
    if not first.strip():
        raise DataError(
            "the file is empty (no header row)",
            file=ref.uri,
            fix="write a header row with the column names, then one row per example",
        )
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            "the header row is not valid UTF-8",
            file=ref.uri,
            fix="re-encode the file as UTF-8 (for example: iconv -f latin1 -t utf-8)",
        ) from exc
    line = text.splitlines()[0] if text.strip() else ""
    if "\r" in text.rstrip("\r\n") and "\n" not in text.rstrip("\r\n"):
        raise DataError(
            "the lines end with a carriage return alone (old Mac line ends), so the file "
            "reads as one line",
            file=ref.uri,
            fix="convert the line ends to \\n, for example: tr '\\r' '\\n' < in.csv > out.csv",
        )
    if len(line) >= (1 << 20) - 2:
        raise DataError(
            "the header row is longer than 1 MiB: this is not a header with column names",
            file=ref.uri,
            fix="write a header row with the column names, then one row per example",
        )
    if ref.format == "tsv" or spec.delimiter == "\t":
        names = line.split(delimiter)
    else:
        try:
            names = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as exc:
            raise DataError(
                f"cannot read the header row ({exc})",
                file=ref.uri,
                fix="write a header row with the column names, then one row per example",
            ) from exc
    if len(names) == 1:
        for other in ("\t", ",", ";", "|"):
            if other != delimiter and other in line:
                shown = {"\t": "\\t"}.get(other, other)
                raise DataError(
                    f"the header has one column but contains '{shown}': the file looks "
                    f"'{shown}'-separated, not '{delimiter}'-separated",
                    file=ref.uri,
                    fix=f'set delimiter: "{shown}" in the data spec'
                    + (" or name the file .tsv" if other == "\t" else ""),
                )
    return [n.strip() for n in names], delimiter


def _csv_batches(ref: FileRef, spec: DataSpec, batch_rows: int) -> Iterator[pa.RecordBatch]:
    names, delimiter = _csv_header(ref, spec)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"the header names {dupes} more than once",
            file=ref.uri,
            fix="give every column a distinct name",
        )
    quoted = ref.format != "tsv"
    parse = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoted else False,
        double_quote=quoted,
        newlines_in_values=quoted,
        invalid_row_handler=None,
    )
    read = pacsv.ReadOptions(
        column_names=names, skip_rows=1, block_size=CSV_BLOCK_BYTES, use_threads=True
    )
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with fsspec.open(ref.uri, "rb", compression="infer") as fh:
            reader = pacsv.open_csv(
                fh, read_options=read, parse_options=parse, convert_options=convert
            )
            pending: list[pa.RecordBatch] = []
            size = 0
            for batch in reader:
                pending.append(batch)
                size += batch.num_rows
                if size >= batch_rows:
                    yield from pa.Table.from_batches(pending).to_batches()
                    pending, size = [], 0
            if pending:
                yield from pa.Table.from_batches(pending).to_batches()
    except pa.ArrowInvalid as exc:
        if "skip initial" in str(exc) and _only_header(ref):
            return  # a header without a line end, and no rows: nothing to read
        raise _csv_error(ref, exc, len(names)) from exc


def _only_header(ref: FileRef) -> bool:
    with fsspec.open(ref.uri, "rb", compression="infer") as fh:
        fh.readline()
        return not fh.read(1 << 16).strip()


def _csv_error(ref: FileRef, exc: Exception, n_columns: int) -> DataError:
    message = str(exc)
    if "UTF8" in message or "utf8" in message.lower():
        line = _first_bad_utf8_line(ref)
        return DataError(
            "contains bytes that are not valid UTF-8"
            + (f" (first at line {line}; only the first is reported)" if line else ""),
            file=ref.uri,
            rows=[line - 1] if line and line > 1 else [],
            fix="re-encode the file as UTF-8 (for example: iconv -f latin1 -t utf-8)",
        )
    if "straddl" in message:
        return DataError(
            f"a row is longer than {CSV_BLOCK_BYTES >> 20} MiB",
            file=ref.uri,
            fix="split the text into shorter passages, or check for an unclosed quote that "
            "joins many lines into one field",
        )
    if "Expected" in message and "columns" in message:
        return DataError(
            f"a row has a different number of fields than the {n_columns} columns of the "
            f"header ({message.splitlines()[0]})",
            file=ref.uri,
            rows=_first_ragged_row(ref, n_columns),
            fix="quote fields that contain the delimiter, or fix the row; a tab-separated "
            "file with stray quotes should be named .tsv (read without quoting)",
        )
    return DataError(
        f"cannot parse the file: {message.splitlines()[0]}",
        file=ref.uri,
        fix="check that the file is CSV/TSV with a header row, or set format: in the data spec",
    )


def _first_ragged_row(ref: FileRef, n_columns: int) -> list[int]:
    """The first data row whose field count differs from the header's (slow path, on error)."""
    csv.field_size_limit(1 << 30)
    quoted = ref.format != "tsv"
    with fsspec.open(ref.uri, "r", compression="infer", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(
            fh,
            delimiter="\t" if ref.format == "tsv" else ",",
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        )
        try:
            next(reader, None)
            for row_number, fields in enumerate(reader, start=1):
                if fields and len(fields) != n_columns:
                    return [row_number]
        except csv.Error:
            return [reader.line_num - 1] if reader.line_num > 1 else []
    return []


def _first_bad_utf8_line(ref: FileRef) -> int | None:
    """The line of the first invalid UTF-8 byte (slow path, only when reading failed)."""
    with fsspec.open(ref.uri, "rb", compression="infer") as fh:
        for lineno, line in enumerate(io.BufferedReader(fh), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def _jsonl_batches(ref: FileRef, spec: DataSpec, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """JSON Lines, parsed line by line: exact row numbers for every error, bounded memory."""
    columns: dict[str, list] = {}
    count = 0

    def flush() -> pa.RecordBatch:
        try:
            arrays = {name: _json_column(values) for name, values in columns.items()}
        except UnicodeEncodeError as exc:
            offset, name = _unencodable_row(columns)
            raise DataError(
                "holds an escape such as \\ud83d that is half of a character (an unpaired "
                "surrogate, often an emoji cut in two), which is not text",
                file=ref.uri,
                rows=[row - count + 1 + offset],
                column=name,
                fix="repair or remove the escape in that row",
            ) from exc
        batch = pa.RecordBatch.from_pydict(arrays) if arrays else pa.RecordBatch.from_pydict({})
        # Rows whose value was a number, list, object or boolean where others were strings:
        # kept as JSON text (a score may be 0.5 or "0.5"), and marked so that a text column
        # can refuse them instead of training on '["a", "b"]' or "true".
        marks = {
            f"{NOT_STRING_ROWS}{name}".encode(): json.dumps(
                [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)]
            ).encode()
            for name, values in columns.items()
            if pa.types.is_string(batch.schema.field(name).type)
            and any(v is not None and not isinstance(v, str) for v in values)
        }
        return batch.replace_schema_metadata(marks) if marks else batch

    row = 0
    with fsspec.open(ref.uri, "rb", compression="infer") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            row += 1
            try:
                record = json.loads(raw)
            except UnicodeDecodeError as exc:
                raise DataError(
                    "contains bytes that are not valid UTF-8",
                    file=ref.uri,
                    rows=[row],
                    fix="re-encode the file as UTF-8",
                ) from exc
            except json.JSONDecodeError as exc:
                array = lineno == 1 and raw.lstrip().startswith(b"[")
                raise DataError(
                    f"line {lineno} is not valid JSON ({exc.msg})"
                    + ("; the file looks like one JSON array, not JSON Lines" if array else ""),
                    file=ref.uri,
                    rows=[row],
                    fix="write one JSON object per line (JSON Lines)"
                    + (", for example: jq -c '.[]' in.json > out.jsonl" if array else ""),
                ) from exc
            if not isinstance(record, dict):
                raise DataError(
                    f"line {lineno} is a JSON {type(record).__name__}, not an object",
                    file=ref.uri,
                    rows=[row],
                    fix="write one JSON object per line, with the column names as keys",
                )
            for name in record:
                if name not in columns:
                    columns[name] = [None] * count
            for name, values in columns.items():
                values.append(record.get(name))
            count += 1
            if count >= batch_rows:
                yield flush()
                columns = {name: [] for name in columns}
                count = 0
    if count:
        yield flush()


def _json_column(values: list) -> pa.Array:
    """Strings stay strings, numbers stay numbers; anything mixed becomes text to be checked."""
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, float}:
        if kinds == {int} and all(v is None or INT64[0] <= v <= INT64[1] for v in values):
            return pa.array(values, type=pa.int64())
        # A float, or an integer beyond 64 bits: as floats (inf beyond float range).
        return pa.array([None if v is None else _as_float(v) for v in values], pa.float64())
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
        type=pa.string(),
    )


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


def _unencodable_row(columns: dict[str, list]) -> tuple[int, str]:
    """The first (offset, column) of a text that UTF-8 cannot encode (an unpaired surrogate)."""
    for name, values in columns.items():
        for i, v in enumerate(values):
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return i, name
    raise AssertionError("called only after a text failed to encode")


def _parquet_batches(ref: FileRef, spec: DataSpec, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        with fsspec.open(ref.uri, "rb") as fh:
            # Read page by page, one batch at a time. pyarrow's defaults (pre_buffer, threads)
            # fetch and decode row groups ahead and can hold most of a large file in memory.
            parquet = pq.ParquetFile(fh, buffer_size=1 << 20, pre_buffer=False)
            columns = _data_columns(parquet.schema_arrow.names)
            yield from parquet.iter_batches(
                batch_size=batch_rows, columns=columns, use_threads=False
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"cannot read the file as Parquet ({str(exc).splitlines()[0]})",
            file=ref.uri,
            fix="write the file with pyarrow or pandas .to_parquet(), or use CSV/JSONL",
        ) from exc


def _data_columns(names: list[str]) -> list[str]:
    """A Parquet file's columns less the index pandas writes beside the data
    (``df.to_parquet()`` of a filtered frame stores its row labels as ``__index_level_0__``)."""
    return [n for n in names if not PANDAS_INDEX.fullmatch(n)]


def map_columns(names: list[str], spec: DataSpec, uri: str) -> tuple[str, dict[str, str]]:
    """Decide the structure and map refit's column names to the file's, by name only.

    Returns the structure and ``{refit_name: file_column}``.
    """
    present = set(names)
    mapping: dict[str, str] = {}
    for target, source in spec.columns.items():
        if source not in present:
            raise DataError(
                f"the data spec maps {target} to column '{source}', which the file does not "
                f"have (it has {names})",
                file=uri,
                column=source,
                fix=f"set columns: {{{target}: <one of {names}>}}",
            )
        mapping[target] = source
    for target, aliases in ALIASES.items():
        if target in mapping:
            continue
        lowered = {n.lower(): n for n in names if n not in mapping.values()}
        for alias in aliases:
            if alias in lowered:
                mapping[target] = lowered[alias]
                break

    candidates = [spec.structure] if spec.structure else list(STRUCTURE_COLUMNS)
    for structure in candidates:
        needed = STRUCTURE_COLUMNS[structure]
        if all(c in mapping for c in needed):
            return structure, {c: mapping[c] for c in needed}
    wanted = " or ".join("(" + ", ".join(STRUCTURE_COLUMNS[s]) + ")" for s in candidates)
    missing = {s: [c for c in STRUCTURE_COLUMNS[s] if c not in mapping] for s in candidates}
    closest = min(candidates, key=lambda s: len(missing[s]))
    raise DataError(
        f"missing column(s) {missing[closest]}: refit needs {wanted} and the file has {names}",
        file=uri,
        column=missing[closest][0],
        fix="rename the columns, or map them in the data spec, e.g. columns: "
        "{anchor: question, positive: answer}",
    )
