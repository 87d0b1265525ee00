"""Validation speed: refit's validation of a scored-pairs CSV against a plain pandas baseline.

Generates N scored pairs (fixed seed) with realistic sentence lengths, some quoted fields with
commas, and, in STS-B train's proportions, exact duplicates (0.75 %), pairs with equal texts
after trimming and case folding (0.2 %) and pairs of the evaluation set (0.2 %, as they are,
reversed or re-cased); no error rows, since an error stops validation. Then it validates the
file R times with each side, alternating, every run in a fresh Python process so that its peak
memory is its own:

    refit   refit.tasks.validate_data.validate_training_data, with the LeakageIndex the flow
            builds from the evaluation set (load_eval_set) and no tokenizer
    pandas  bench/validate_pandas.py, the same checks and drops written plainly with pandas

Each run times the validation alone (not the interpreter start, the imports or the loading of
the evaluation set) and reports its peak RSS and the RSS just before. The two sides must agree
on the clean rows, the drop counts and the rows listed for each drop, and their clean Parquet
files must hold the same rows, texts and scores; otherwise the benchmark stops. The medians go
to a markdown table on stdout and to bench/results/validation.json.

    python bench/validation.py                      # 1,000,000 rows, 3 runs per side
    python bench/validation.py --rows 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe, memory, summarize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "validation.json"
SIDES = ("refit", "pandas")
SCORE_RANGE = (0.0, 5.0)
EVAL_ROWS = 2_000
VOCABULARY = 4_000
WORDS = (8, 30)
COMMA_SHARE = 0.02  # of words; about a third of the sentences then hold a comma and are quoted
DUPLICATE_SHARE = 0.0075
EQUAL_SHARE = 0.002
LEAK_SHARE = 0.002
CHUNK = 50_000  # sentences built at once: bounds the generator's index arrays to ~100 MB


def _vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Word pieces as one byte blob: each word as "w ", "w, " and "w.\\n", with Zipf weights."""
    sizes = np.clip(rng.poisson(5, VOCABULARY), 2, 12)
    letters = rng.integers(ord("a"), ord("z") + 1, int(sizes.sum()), dtype=np.uint8).tobytes()
    ends = np.cumsum(sizes)
    words = [letters[e - s : e] for s, e in zip(sizes, ends, strict=True)]
    pieces = [w + suffix for w in words for suffix in (b" ", b", ", b".\n")]
    blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    piece_sizes = np.array([len(p) for p in pieces], dtype=np.int64)
    starts = np.cumsum(piece_sizes) - piece_sizes
    weights = 1.0 / (np.arange(VOCABULARY) + 2.7)
    return blob, starts, piece_sizes, weights / weights.sum()


def sentences(rng: np.random.Generator, vocabulary: tuple, count: int) -> list[str]:
    """``count`` capitalized sentences of 8 to 30 Zipf-distributed words, ending in a period."""
    blob, starts, piece_sizes, weights = vocabulary
    out: list[str] = []
    for begin in range(0, count, CHUNK):
        n = min(CHUNK, count - begin)
        lengths = rng.integers(WORDS[0], WORDS[1] + 1, n)
        total = int(lengths.sum())
        last = np.cumsum(lengths) - 1
        form = (rng.random(total) < COMMA_SHARE).astype(np.int64)
        form[last] = 2
        piece = rng.choice(VOCABULARY, total, p=weights) * 3 + form
        size = piece_sizes[piece]
        at = np.cumsum(size) - size
        index = np.repeat(starts[piece] - at, size) + np.arange(int(size.sum()))
        text = blob[index]
        text[at[last - lengths + 1]] -= 32  # upper-case the first letter of each sentence
        out.extend(text.tobytes().decode("ascii").split("\n")[:-1])
    return out


def _csv_field(text: str) -> str:
    return f'"{text}"' if "," in text else text


def _write_csv(path: Path, first: list[str], second: list[str], scores: np.ndarray) -> None:
    lines = [
        f"{_csv_field(a)},{_csv_field(b)},{s:.2f}\n"
        for a, b, s in zip(first, second, scores.tolist(), strict=True)
    ]
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("sentence1,sentence2,score\n")
        fh.writelines(lines)


def generate(work: Path, rows: int, seed: int) -> dict[str, Any]:
    """Write train.csv (``rows`` pairs) and eval.csv; return what was planted in the data."""
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    eval_first = sentences(rng, vocabulary, EVAL_ROWS)
    eval_second = sentences(rng, vocabulary, EVAL_ROWS)
    first = sentences(rng, vocabulary, rows)
    second = sentences(rng, vocabulary, rows)
    scores = rng.integers(0, 501, rows) / 100

    planted = {
        kind: max(1, round(share * rows))
        for kind, share in (("leakage", LEAK_SHARE), ("equal", EQUAL_SHARE))
    }
    planted["duplicates"] = max(1, round(DUPLICATE_SHARE * rows))
    targets = rng.choice(np.arange(1, rows), sum(planted.values()), replace=False)
    leak, equal, dup = np.split(targets, np.cumsum([planted["leakage"], planted["equal"]]))
    for i, row in enumerate(leak.tolist()):
        k = int(rng.integers(EVAL_ROWS))
        a, b = eval_first[k], eval_second[k]
        first[row], second[row] = ((a, b), (b, a), (a.upper(), b))[i % 3]
    for i, row in enumerate(equal.tolist()):
        second[row] = first[row].lower() if i % 2 else f" {first[row]}  "
    for row in np.sort(dup).tolist():  # in order, so that every source already holds its text
        source = int(rng.integers(row))
        first[row], second[row] = first[source], second[source]

    work.mkdir(parents=True, exist_ok=True)
    _write_csv(work / "train.csv", first, second, scores)
    _write_csv(work / "eval.csv", eval_first, eval_second, rng.integers(0, 501, EVAL_ROWS) / 100)
    return planted


def run_side(side: str, train: Path, eval_csv: Path, out: Path) -> dict[str, Any]:
    """One validation in this process: the figures the parent compares (child process only)."""
    low, high = SCORE_RANGE
    if side == "refit":
        from refit.config import DataSpec
        from refit.tasks.validate_data import (
            LeakageIndex,
            load_eval_set,
            validate_training_data,
        )

        eval_spec = DataSpec(path=str(eval_csv), name="eval", score_range=SCORE_RANGE)
        eval_set, _ = load_eval_set(eval_spec, out.parent / "eval-refit")
        leakage = LeakageIndex.from_eval_sets([eval_set])
        spec = DataSpec(path=str(train), name="train", score_range=SCORE_RANGE)

        def work() -> tuple[int, dict[str, int], dict[str, list[int]]]:
            record = validate_training_data(spec, "new", out, leakage, None, None)
            listed = {f.code: f.rows for f in record.findings if f.code in record.dropped}
            return record.rows, record.dropped, listed
    else:
        import validate_pandas

        keys = validate_pandas.load_eval_keys(eval_csv)

        def work() -> tuple[int, dict[str, int], dict[str, list[int]]]:
            outcome = validate_pandas.validate(train, out, keys, low, high)
            return outcome.rows, outcome.dropped, outcome.dropped_rows

    gc.collect()
    before, _ = memory()
    start = time.perf_counter()
    rows, dropped, listed = work()
    seconds = time.perf_counter() - start
    _, peak = memory()
    return {
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "clean_rows": rows,
        "dropped": dropped,
        "dropped_rows": listed,
    }


def _child(side: str, work: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--side",
        side,
        "--work",
        str(work),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"the {side} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _same_output(work: Path) -> None:
    """Both sides' clean Parquet files hold the same rows, texts and scores, in the same order.

    pandas writes its text as large_string, refit as string: the values are compared, not the
    types.
    """
    import pyarrow.parquet as pq

    refit = pq.read_table(work / "refit.parquet")
    pandas = pq.read_table(work / "pandas.parquet")
    pairs = {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score", "__row": "row"}
    for ours, theirs in pairs.items():
        if not refit[ours].cast(pandas[theirs].type).equals(pandas[theirs]):
            sys.exit(f"the clean files differ in column {ours}: the two sides did different work")


def with_rows_per_second(runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    summary = summarize(runs)
    summary["rows_per_second"] = round(rows / statistics.median(r["seconds"] for r in runs))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="training pairs to generate")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--work", type=Path, default=ROOT / ".refit" / "bench" / "validation")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    if args.side:
        result = run_side(
            args.side, work / "train.csv", work / "eval.csv", work / f"{args.side}.parquet"
        )
        print(json.dumps(result))
        return

    info = describe("pyarrow", "pandas", "numpy")
    start = time.perf_counter()
    planted = generate(work, args.rows, args.seed)
    print(
        f"generated {args.rows:,} pairs ({(work / 'train.csv').stat().st_size / 2**20:.0f} MiB) "
        f"in {time.perf_counter() - start:.1f} s; planted {planted}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        # Alternate which side goes first, so neither always meets a cold page cache.
        for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
            result = _child(side, work)
            runs[side].append(result)
            print(f"run {repeat + 1} {side}: {result['seconds']:.2f} s", flush=True)
        refit, pandas = runs["refit"][-1], runs["pandas"][-1]
        for key in ("clean_rows", "dropped", "dropped_rows"):
            if refit[key] != pandas[key]:
                sys.exit(f"{key} differ: refit {refit[key]}, pandas {pandas[key]}")
    _same_output(work)

    summary = {side: with_rows_per_second(runs[side], args.rows) for side in SIDES}
    ratio = summary["pandas"]["median_seconds"] / summary["refit"]["median_seconds"]
    report = {
        "rows": args.rows,
        "repeats": args.repeats,
        "seed": args.seed,
        "eval_rows": EVAL_ROWS,
        "train_csv_mib": round((work / "train.csv").stat().st_size / 2**20, 1),
        "planted": planted,
        "clean_rows": runs["refit"][-1]["clean_rows"],
        "dropped": runs["refit"][-1]["dropped"],
        "ratio_pandas_over_refit": round(ratio, 3),
        "refit": summary["refit"],
        "pandas": summary["pandas"],
        "machine": info,
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{args.rows:,} rows, median of {args.repeats} runs per side\n")
    print("| side | seconds | rows/s | RSS before (MiB) | peak RSS (MiB) | increment (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for side in SIDES:
        s = summary[side]
        print(
            f"| {side} | {s['median_seconds']:.2f} | {s['rows_per_second']:,} "
            f"| {s['median_rss_before_mib']:.0f} | {s['median_peak_rss_mib']:.0f} "
            f"| {s['median_rss_increment_mib']:.0f} |"
        )
    print(
        f"\nclean rows {report['clean_rows']:,}, dropped {report['dropped']}; "
        f"pandas / refit = {ratio:.2f}x; written to {RESULTS.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
