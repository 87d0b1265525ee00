"""The baseline for bench/validation.py: refit's checks on a scored-pairs CSV, in plain pandas.

It does what `refit.tasks.validate_data.validate_training_data` does for a CSV of
(sentence1, sentence2, score) with a declared score range, so that the benchmark compares two
ways of doing the same work, not two amounts of work:

- the file's sha256 (refit records it in the lineage);
- read every column as text, so that "NA" or "1e5" in a text column stays text and an empty
  field is an empty string, not a null (refit reads CSV the same way);
- errors, each with the 1-based data rows: a required column missing, a null text, an empty or
  whitespace-only text, a quoted text whose later lines look like swallowed rows, a missing
  score, a score that is not a number (inf and nan included), a score outside the range;
- drops, in refit's order, each counted with its first 20 rows: exact duplicates of the two
  texts (the first copy is kept), pairs whose texts are equal after trimming and lower-casing,
  and pairs equal to an evaluation pair after the same normalization, in either order;
- scores rescaled to [0, 1] as float32, and the clean rows written to Parquet with their file
  index and row number, as refit writes them.

Left out of both sides: the share of texts longer than the model's max_seq_length (refit
tokenizes a sample of 2,000 texts when given a tokenizer; the benchmark passes none), and the
anchor-is-an-evaluation-query check, which applies only to pairs and retrieval evaluation sets
(refit runs it against an empty query set here; it finds nothing). Header diagnostics that only
matter on unreadable files (wrong delimiter, old Mac line ends, invalid UTF-8) cost nothing on a
good file and are not repeated. pandas' ``str.strip``/``str.lower`` and refit's trimming of
every character Python calls whitespace and case folding agree on the ASCII letters, spaces and
punctuation that the benchmark generates; beyond ASCII (refit folds "ß" to "ss") they may not.
refit also counts the duplicated pairs whose copies disagree on the score (in this data, most
do); the baseline does not, which can only slow refit's side.

    python bench/validate_pandas.py train.csv --eval eval.csv --out clean.parquet
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TEXTS = ["sentence1", "sentence2"]
SCORE = "score"
ROWS_KEPT = 20
KEY_SEPARATOR = "\x1f"


class ValidationError(Exception):
    """The data has errors; the message lists each with its count and first rows."""


@dataclass
class Outcome:
    """What validation kept and dropped, comparable with refit's DataRecord."""

    rows: int
    sha256: str
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_rows: dict[str, list[int]] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize(texts: pd.Series) -> pd.Series:
    """Trim and lower-case: the key under which two texts count as equal."""
    return texts.str.strip().str.lower()


def pair_keys(first: pd.Series, second: pd.Series) -> pd.Series:
    """An order-free key of two normalized texts, so (a, b) and (b, a) are one pair."""
    low = first.where(first <= second, second)
    high = second.where(first <= second, first)
    return low + KEY_SEPARATOR + high


def load_eval_keys(path: Path) -> set[str]:
    """The pair keys of an evaluation CSV, which training rows must not repeat."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return set(pair_keys(normalize(frame[TEXTS[0]]), normalize(frame[TEXTS[1]])))


def _score_values(
    scores: pd.Series, low: float, high: float, report: dict[str, pd.Series]
) -> np.ndarray:
    """Parse the score text into floats, recording missing, non-numeric and out-of-range rows."""
    missing = scores.isna() | (scores.str.strip() == "")
    values = pd.to_numeric(scores.where(~missing), errors="coerce").to_numpy(dtype="float64")
    report["score is missing"] = missing
    report["score is not a number"] = pd.Series(
        (np.isnan(values) & ~missing.to_numpy()) | np.isinf(values), index=scores.index
    )
    finite = np.isfinite(values)
    report[f"score outside the range [{low:g}, {high:g}]"] = pd.Series(
        finite & ((values < low) | (values > high)), index=scores.index
    )
    return np.where(finite, values, low)


def _swallowed(texts: pd.Series, n_columns: int) -> pd.Series:
    """Texts with a later line holding as many commas as a row: rows an open quote swallowed."""
    multiline = texts.str.contains("\n", regex=False)
    hit = pd.Series(False, index=texts.index)
    if multiline.any():
        hit[multiline] = texts[multiline].map(
            lambda value: any(line.count(",") >= n_columns - 1 for line in value.split("\n")[1:])
        )
    return hit


def _raise_if_any(path: Path, report: dict[str, pd.Series], rows: pd.Series) -> None:
    lines = []
    for problem, where in report.items():
        count = int(where.sum())
        if count:
            listed = rows[where.to_numpy()].head(ROWS_KEPT).tolist()
            lines.append(f"{problem}: {count} rows, first {listed}")
    if lines:
        raise ValidationError(f"{path}:\n  " + "\n  ".join(lines))


def validate(path: Path, out_path: Path, eval_keys: set[str], low: float, high: float) -> Outcome:
    """Check the scored pairs in ``path``, drop what refit drops, write the rest to Parquet."""
    sha256 = file_sha256(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in [*TEXTS, SCORE] if c not in frame.columns]
    if missing:
        raise ValidationError(f"{path}: missing column(s) {missing}")
    n_columns = len(frame.columns)
    rows = pd.Series(np.arange(1, len(frame) + 1, dtype="int64"), index=frame.index)

    report: dict[str, pd.Series] = {}
    for column in TEXTS:
        texts = frame[column]
        report[f"{column}: text is null"] = texts.isna()
        report[f"{column}: text is empty or only whitespace"] = texts.str.strip() == ""
        report[f"{column}: a quoted text swallowed rows"] = _swallowed(texts, n_columns)
    values = _score_values(frame[SCORE], low, high, report)
    _raise_if_any(path, report, rows)

    clean = frame[TEXTS].assign(
        score=((values - low) / (high - low)).astype("float32"), file=np.int32(0), row=rows
    )
    outcome = Outcome(rows=0, sha256=sha256)

    def drop(kind: str, where: pd.Series) -> None:
        nonlocal clean
        count = int(where.sum())
        if count:
            outcome.dropped[kind] = count
            outcome.dropped_rows[kind] = clean["row"][where].head(ROWS_KEPT).tolist()
            clean = clean[~where]

    drop("duplicates", clean.duplicated(subset=TEXTS, keep="first"))
    first, second = normalize(clean[TEXTS[0]]), normalize(clean[TEXTS[1]])
    equal = first == second
    drop("equal_texts", equal)
    if eval_keys:
        drop("leakage", pair_keys(first[~equal], second[~equal]).isin(eval_keys))
    if clean.empty:
        raise ValidationError(f"{path}: no usable rows left ({outcome.dropped})")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(out_path, index=False)
    outcome.rows = len(clean)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="scored pairs CSV: sentence1, sentence2, score")
    parser.add_argument("--eval", type=Path, help="evaluation CSV whose pairs must not leak")
    parser.add_argument("--out", type=Path, required=True, help="clean Parquet file to write")
    parser.add_argument("--range", type=float, nargs=2, default=(0.0, 5.0), metavar=("LO", "HI"))
    args = parser.parse_args()
    keys = load_eval_keys(args.eval) if args.eval else set()
    print(validate(args.path, args.out, keys, *args.range))


if __name__ == "__main__":
    main()
