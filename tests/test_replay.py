"""Replay sampling: uniform, reproducible, bounded, and never repeating new or evaluation rows."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl

from refit.config import DataSpec
from refit.tasks.sample_replay import Reservoir, exclusion_index, replay_size, sample_replay
from refit.tasks.validate_data import LeakageIndex, load_eval_set, validate_training_data


def pool_record(path, tmp_path, name, **spec):
    return validate_training_data(
        DataSpec(path=str(path), name=name, **spec), "new", tmp_path / f"{name}.parquet"
    )


@pytest.fixture
def stsb_pool(tmp_path):
    path = write_csv(tmp_path / "stsb.csv", stsb_rows("train", 2000))
    return [pool_record(path, tmp_path, "stsb", score_range=(0, 5))]


def sentences(records) -> list[str]:
    out = []
    for r in records:
        out += pq.read_table(r.clean_path).column(0).to_pylist()
    return out


def test_size_is_a_fraction_or_a_count():
    assert replay_size(0.2, 919) == 184
    assert replay_size(50, 919) == 50
    assert replay_size(0, 919) == 0
    assert replay_size(1.0, 919) == 919  # 1.0 is 100 %, not one row


def test_same_seed_same_sample_other_seed_other_sample(stsb_pool, tmp_path):
    none = LeakageIndex()
    a = sample_replay(stsb_pool, 100, 7, none, tmp_path / "a")
    b = sample_replay(stsb_pool, 100, 7, none, tmp_path / "b")
    c = sample_replay(stsb_pool, 100, 8, none, tmp_path / "c")
    assert a[0].rows == 100
    assert sentences(a) == sentences(b)
    assert sentences(a) != sentences(c)


def test_sample_is_uniform_across_files(tmp_path):
    rows = stsb_rows("train", 3000)
    small = pool_record(
        write_csv(tmp_path / "s.csv", rows[:500]), tmp_path, "small", score_range=(0, 5)
    )
    large = pool_record(
        write_csv(tmp_path / "l.csv", rows[500:3000]), tmp_path, "large", score_range=(0, 5)
    )
    small_texts = set(pq.read_table(small.clean_path)["sentence1"].to_pylist())
    shares = []
    for seed in range(5):
        got = sample_replay([small, large], 600, seed, LeakageIndex(), tmp_path / f"s{seed}")
        texts = pq.read_table(got[0].clean_path)["sentence1"].to_pylist()
        shares.append(sum(t in small_texts for t in texts) / len(texts))
    # small holds ~1/6 of the pool; the mean share over seeds must be close to it.
    assert abs(sum(shares) / len(shares) - small.rows / (small.rows + large.rows)) < 0.03


def test_rows_of_new_data_and_evaluation_sets_never_enter(stsb_pool, tmp_path):
    rows = stsb_rows("train", 2000)
    new = pool_record(
        write_csv(tmp_path / "new.csv", rows[:300]), tmp_path, "new", score_range=(0, 5)
    )
    test = write_csv(tmp_path / "test.csv", rows[300:600])
    es, _ = load_eval_set(DataSpec(path=str(test), score_range=(0, 5)), tmp_path / "eval")
    exclude = exclusion_index([new], LeakageIndex.from_eval_sets([es]))
    got = sample_replay(stsb_pool, 1300, 1, exclude, tmp_path / "r")
    table = pq.read_table(got[0].clean_path)
    forbidden = {(r["sentence1"], r["sentence2"]) for r in rows[:600]}
    sampled = set(zip(table["sentence1"].to_pylist(), table["sentence2"].to_pylist(), strict=True))
    assert not sampled & forbidden
    assert table.num_rows == 1300  # the pool still has ~1400 other rows to draw from
    excluded = next(f for f in got[0].findings if f.code == "replay_excluded")
    assert excluded.count >= 590


def test_pools_of_several_structures_give_one_record_each(stsb_pool, tmp_path):
    pairs = pool_record(write_jsonl(tmp_path / "p.jsonl", scifact_pairs(300)), tmp_path, "sci")
    got = sample_replay([*stsb_pool, pairs], 230, 3, LeakageIndex(), tmp_path / "r")
    by_structure = {r.structure: r.rows for r in got}
    assert set(by_structure) == {"scored_pairs", "pairs"}
    assert sum(by_structure.values()) == 230


def test_reservoir_memory_is_bounded_by_k():
    import pyarrow as pa

    reservoir = Reservoir(50)
    for start in range(0, 10_000, 1000):
        reservoir.offer(
            "pairs",
            pa.table(
                {
                    "anchor": [str(i) for i in range(start, start + 1000)],
                    "__key": pa.array(
                        [((i * 7919) % 10007) / 10007 for i in range(start, start + 1000)]
                    ),
                }
            ),
        )
        assert reservoir.tables["pairs"].num_rows <= 50
    assert reservoir.tables["pairs"].num_rows == 50


def test_replay_reads_parquet_pools(tmp_path):
    import pyarrow as pa

    rows = stsb_rows("train", 400)
    table = pa.table(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "score": pa.array([float(r["score"]) for r in rows]),
        }
    )
    pq.write_table(table, tmp_path / "pool.parquet")
    record = pool_record(tmp_path / "pool.parquet", tmp_path, "pq", score_range=(0, 5))
    got = sample_replay([record], 40, 0, LeakageIndex(), tmp_path / "r")
    scores = pq.read_table(got[0].clean_path)["score"].to_pylist()
    assert len(scores) == 40 and max(scores) <= 1.0


def test_sample_is_exactly_the_smallest_keys_of_the_eligible_rows(tmp_path):
    """Skipping rows that can no longer win changes nothing: the sample equals a brute force.

    The reference draws one key per pool row from the same generator, drops the rows equal to
    an evaluation pair or with equal texts, and keeps the k smallest keys, over a pool of three
    record batches.
    """
    import numpy as np
    import pyarrow as pa

    from refit.dataio import BATCH_ROWS
    from refit.records import DataRecord

    n, k, seed = 2 * BATCH_ROWS + 5_000, 700, 11
    first = [f"first text {i}" for i in range(n)]
    second = [f"second text {i}" for i in range(n)]
    equal = set(range(3, n, 211))
    for i in equal:
        second[i] = f"  FIRST TEXT {i} "
    pq.write_table(
        pa.table({"sentence1": first, "sentence2": second, "score": np.linspace(0, 1, n)}),
        tmp_path / "pool.parquet",
    )
    leaked = [i for i in range(7, n, 97) if i not in equal]
    write_csv(
        tmp_path / "eval.csv",
        [{"sentence1": second[i], "sentence2": first[i], "score": i % 2} for i in leaked],
    )
    eval_set, _ = load_eval_set(DataSpec(path=str(tmp_path / "eval.csv"), name="ev"), tmp_path)
    pool = [
        DataRecord(
            name="pool",
            role="original",
            structure="scored_pairs",
            spec={"path": str(tmp_path / "pool.parquet")},
            files=[],
            rows=n,
            stored=str(tmp_path / "pool.parquet"),
        )
    ]

    got = sample_replay(pool, k, seed, LeakageIndex.from_eval_sets([eval_set]), tmp_path / "r")

    keys = np.random.default_rng(seed).random(n)
    eligible = np.ones(n, dtype=bool)
    eligible[list(equal)] = False
    eligible[leaked] = False
    rows = np.flatnonzero(eligible)
    expected = [first[i] for i in rows[np.argsort(keys[rows])[:k]]]
    assert got[0].rows == k
    assert pq.read_table(got[0].clean_path)["sentence1"].to_pylist() == expected
