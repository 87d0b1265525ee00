"""Replay sampling: refit's streaming sampler against pandas.read_parquet(...).sample(...).

Generates a Parquet file of N scored pairs (default 10,000,000) drawn from U unique sentences
(default 2,000,000), written in row groups of 1,000,000 without dictionary encoding, so that
both sides read real strings. Then it draws k rows (default 100,000) R times with each side,
alternating, every run in a fresh Python process so that its peak memory is its own:

    refit   refit.tasks.sample_replay.sample_replay over the file as a data set of the lineage,
            leaving out the 1,500 pairs of an evaluation set, as a retrain does
    pandas  pandas.read_parquet(path).sample(n=k, random_state=seed): the one-liner that reads
            everything, excluding nothing

Each run times the sampling alone (after the imports) and reports its peak RSS (VmHWM) and the
RSS just before the work; the increment is what sampling itself held. Both sides must return
k rows. The medians go to a markdown table on stdout and to bench/results/replay.json.

    python bench/replay.py                      # 10M pairs, k = 100,000, 3 runs per side
    python bench/replay.py --pairs 1000000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import describe, memory, summarize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORDS = 6000
EVAL_PAIRS = 1500


def generate(path: Path, pairs: int, unique: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 11, size=WORDS)
    vocab = np.array(["".join(rng.choice(letters, n)) for n in lengths], dtype=object)
    sentences = np.empty(unique, dtype=object)
    sizes = rng.integers(6, 19, size=unique)
    for i, n in enumerate(sizes):
        sentences[i] = " ".join(vocab[rng.integers(0, WORDS, n)]).capitalize() + "."
    schema = pa.schema(
        [("sentence1", pa.string()), ("sentence2", pa.string()), ("score", pa.float64())]
    )
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema, use_dictionary=False) as writer:
        for start in range(0, pairs, 1_000_000):
            n = min(1_000_000, pairs - start)
            ids = rng.integers(0, unique, size=(n, 2))
            writer.write_table(
                pa.table(
                    {
                        "sentence1": pa.array(sentences[ids[:, 0]], pa.string()),
                        "sentence2": pa.array(sentences[ids[:, 1]], pa.string()),
                        "score": pa.array(rng.random(n)),
                    },
                    schema=schema,
                )
            )
    tmp.rename(path)


def eval_set(data: Path, out: Path) -> None:
    """An evaluation set of pairs that are in the pool: the sampler has to leave them out."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    head = pq.ParquetFile(data).read_row_group(0).slice(0, EVAL_PAIRS)
    pacsv.write_csv(head, out)


def run_refit(data: Path, evals: Path, k: int, seed: int, out: Path) -> dict:
    from refit.config import DataSpec
    from refit.records import DataRecord
    from refit.tasks.sample_replay import sample_replay
    from refit.tasks.validate_data import LeakageIndex, load_eval_set

    loaded, _ = load_eval_set(DataSpec(path=str(evals), name="eval", score_range=[0, 1]), out)
    exclude = LeakageIndex.from_eval_sets([loaded])
    pool = [
        DataRecord(
            name="pool",
            role="original",
            structure="scored_pairs",
            spec={"path": str(data), "structure": "scored_pairs"},
            files=[],
            rows=0,
            stored=str(data),
        )
    ]
    before, _ = memory()
    started = time.perf_counter()
    records = sample_replay(pool, k, seed, exclude, out)
    seconds = time.perf_counter() - started
    _, peak = memory()
    rows = sum(r.rows for r in records)
    return {"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak, "rows": rows}


def run_pandas(data: Path, k: int, seed: int) -> dict:
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (read_parquet imports it lazily; not part of the work)

    before, _ = memory()
    started = time.perf_counter()
    sample = pd.read_parquet(data).sample(n=k, random_state=seed)
    seconds = time.perf_counter() - started
    _, peak = memory()
    return {"seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak, "rows": len(sample)}


def child(args: argparse.Namespace) -> None:
    if args.side == "refit":
        row = run_refit(args.data, args.evals, args.k, args.seed, args.out)
    else:
        row = run_pandas(args.data, args.k, args.seed)
    print(json.dumps(row))


def one_run(side: str, data: Path, evals: Path, k: int, seed: int, work: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--data",
        str(data),
        "--evals",
        str(evals),
        "--k",
        str(k),
        "--seed",
        str(seed),
        "--out",
        str(work / "out"),
    ]
    env = os.environ | {"PREFECT_HOME": str(work / "prefect"), "DO_NOT_TRACK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--unique", type=int, default=2_000_000)
    parser.add_argument("--k", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / ".refit" / "bench" / "replay")
    parser.add_argument("--child", choices=["refit", "pandas"], dest="side")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--evals", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.side:
        child(args)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    machine = describe("pyarrow", "pandas", "numpy")
    data = args.work / f"pairs-{args.pairs}-{args.unique}.parquet"
    if not data.is_file():
        print(f"generating {args.pairs:,} pairs of {args.unique:,} sentences → {data}", flush=True)
        generate(data, args.pairs, args.unique, args.seed)
    evals = args.work / "eval.csv"
    eval_set(data, evals)
    runs: dict[str, list[dict]] = {"refit": [], "pandas": []}
    for i in range(args.repeats):
        for side in ("refit", "pandas") if i % 2 == 0 else ("pandas", "refit"):
            row = one_run(side, data, evals, args.k, args.seed + i, args.work)
            if row["rows"] != args.k:
                raise SystemExit(f"{side} returned {row['rows']} rows, not {args.k}")
            runs[side].append(row)
            print(
                f"  {side:6} {row['seconds']:7.2f} s  peak {row['peak_rss_mib']:7.0f} MiB  "
                f"(before {row['rss_before_mib']:.0f})",
                flush=True,
            )
    refit, pandas = summarize(runs["refit"]), summarize(runs["pandas"])
    result = {
        "pairs": args.pairs,
        "unique_sentences": args.unique,
        "file_mib": round(data.stat().st_size / 2**20, 1),
        "k": args.k,
        "repeats": args.repeats,
        "excluded_eval_pairs": EVAL_PAIRS,
        "time_ratio_refit_over_pandas": round(
            refit["median_seconds"] / pandas["median_seconds"], 3
        ),
        "peak_rss_ratio_refit_over_pandas": round(
            refit["median_peak_rss_mib"] / pandas["median_peak_rss_mib"], 3
        ),
        "rss_increment_ratio_refit_over_pandas": round(
            refit["median_rss_increment_mib"] / pandas["median_rss_increment_mib"], 4
        ),
        "refit": refit,
        "pandas": pandas,
        "machine": machine,
        "command": "python bench/replay.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| side | median s | peak RSS MiB | RSS before MiB | increment MiB |")
    print("|---|---:|---:|---:|---:|")
    for side, s in (("refit", refit), ("pandas", pandas)):
        print(
            f"| {side} | {s['median_seconds']:.2f} | {s['median_peak_rss_mib']:.0f} "
            f"| {s['median_rss_before_mib']:.0f} | {s['median_rss_increment_mib']:.0f} |"
        )
    print(
        f"\ntime refit/pandas {result['time_ratio_refit_over_pandas']}x, peak RSS "
        f"{result['peak_rss_ratio_refit_over_pandas']}x, increment "
        f"{result['rss_increment_ratio_refit_over_pandas']}x"
    )


if __name__ == "__main__":
    main()
