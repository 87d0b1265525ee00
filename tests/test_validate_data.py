"""Validation: every error names file, row and column; every drop is counted; inputs untouched."""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refit.config import DataSpec, RetrievalSpec
from refit.errors import DataError
from refit.tasks.validate_data import (
    LeakageIndex,
    load_eval_set,
    prepare_data,
    split_holdout,
    validate_training_data,
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validate(path: Path, tmp_path: Path, **spec) -> object:
    return validate_training_data(
        DataSpec(path=str(path), **spec), "new", tmp_path / "out" / "clean.parquet"
    )


def error_of(path: Path, tmp_path: Path, **spec) -> DataError:
    before = digest(path) if path.is_file() else None
    with pytest.raises(DataError) as info:
        validate(path, tmp_path, **spec)
    if before is not None:
        assert digest(path) == before, "validation must never modify its input"
    return info.value


def test_real_stsb_rows_validate_with_rescaled_scores(tmp_path):
    rows = stsb_rows("train", 200)
    path = write_csv(tmp_path / "stsb.csv", rows)
    record = validate(path, tmp_path, score_range=(0, 5))
    table = pq.read_table(record.clean_path)
    distinct = len({(r["sentence1"], r["sentence2"]) for r in rows})
    assert record.structure == "scored_pairs"
    assert record.rows == table.num_rows == distinct == 200 - record.dropped["duplicates"]
    assert table["score"].type == pa.float32()
    assert min(table["score"].to_pylist()) >= 0.0 and max(table["score"].to_pylist()) <= 1.0
    # The first STS-B train row has score 5.000: rescaled to exactly 1.0.
    assert table["score"][0].as_py() == pytest.approx(1.0)
    codes = {f.code for f in record.findings}
    assert {"score_rescaled", "extra_columns"} <= codes


def test_columns_are_found_by_name_in_any_order(tmp_path):
    rows = stsb_rows("train", 50)
    path = write_csv(tmp_path / "reordered.csv", rows, ["genre", "score", "sentence2", "sentence1"])
    record = validate(path, tmp_path, score_range=(0, 5))
    table = pq.read_table(record.clean_path)
    assert table["sentence1"][0].as_py() == rows[0]["sentence1"]
    assert table["sentence2"][0].as_py() == rows[0]["sentence2"]


def test_column_mapping_by_name(tmp_path):
    pairs = [{"question": p["anchor"], "doc": p["positive"]} for p in scifact_pairs(30)]
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    record = validate(path, tmp_path, columns={"anchor": "question", "positive": "doc"})
    assert record.structure == "pairs"
    assert pq.read_table(record.clean_path)["anchor"][0].as_py() == pairs[0]["question"]


def test_missing_column_names_the_file_column_and_fix(tmp_path):
    path = write_csv(tmp_path / "noscore.csv", stsb_rows("train", 5), ["sentence1", "genre"])
    err = error_of(path, tmp_path)
    assert str(path) in str(err)
    assert "missing column" in str(err)
    assert "Fix:" in str(err) and "columns" in str(err)


def test_mapping_to_an_absent_column_is_an_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", stsb_rows("train", 5))
    err = error_of(path, tmp_path, columns={"score": "similarity"})
    assert "column 'similarity'" in str(err)
    assert "does not have" in str(err)


@pytest.mark.parametrize(
    ("bad", "message"),
    [("", "empty or only whitespace"), ("   \t ", "empty or only whitespace")],
)
def test_empty_and_whitespace_text_stop_the_run_with_the_row(tmp_path, bad, message):
    rows = stsb_rows("train", 10)
    rows[3]["sentence2"] = bad
    path = write_csv(tmp_path / "d.csv", rows)
    err = error_of(path, tmp_path, score_range=(0, 5))
    assert "row 4" in str(err) and "column 'sentence2'" in str(err) and message in str(err)
    assert err.rows == [4] and err.column == "sentence2"


def test_null_text_in_jsonl(tmp_path):
    pairs = scifact_pairs(10)
    pairs[6]["positive"] = None
    path = write_jsonl(tmp_path / "p.jsonl", pairs)
    err = error_of(path, tmp_path)
    assert "row 7" in str(err) and "column 'positive'" in str(err) and "null" in str(err)


def test_non_numeric_and_out_of_range_scores(tmp_path):
    rows = stsb_rows("train", 10)
    rows[1]["score"] = "high"
    rows[8]["score"] = "7.5"
    path = write_csv(tmp_path / "d.csv", rows)
    err = error_of(path, tmp_path, score_range=(0, 5))
    text = str(err)
    assert "2 problems" in text
    assert "row 2, column 'score': score is not a number" in text
    assert "row 9, column 'score': score outside the declared range [0, 5]" in text


def test_whitespace_around_a_score_of_any_kind_is_not_an_error(tmp_path):
    rows = stsb_rows("train", 3)
    for row, score in zip(rows, [" 0.5", "0.25\u00a0", "\u20030.75 "], strict=True):
        row["score"] = score
    record = validate(write_csv(tmp_path / "s.csv", rows), tmp_path)
    assert pq.read_table(record.clean_path)["score"].to_pylist() == [0.5, 0.25, 0.75]


def test_scores_on_0_5_scale_without_declared_range_say_how_to_fix(tmp_path):
    path = write_csv(tmp_path / "d.csv", stsb_rows("train", 20))
    err = error_of(path, tmp_path)
    assert "outside the declared range [0, 1]" in str(err)
    assert "score_range: [0, 5]" in str(err)


def test_invalid_utf8_is_an_unreadable_file(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("sentence1,sentence2,score\ncafé,thé,0.5\n".encode("latin-1"))
    err = error_of(path, tmp_path)
    assert "not valid UTF-8" in str(err) and "iconv" in str(err)
    assert "row 1" in str(err)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "empty" in str(error_of(empty, tmp_path))
    header = tmp_path / "header.csv"
    header.write_text("sentence1,sentence2,score\n")
    assert "no usable rows" in str(error_of(header, tmp_path))


def test_wrong_delimiter_is_recognised(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("sentence1;sentence2;score\na;b;0.5\n")
    err = error_of(path, tmp_path)
    assert "';'-separated" in str(err) and "delimiter" in str(err)


def test_tsv_with_stray_quotes_reads_every_row(tmp_path):
    # Real STS-B rows that hold unbalanced quotes: read without quoting, nothing merges.
    rows = [r for r in stsb_rows("train") if r["sentence1"].count('"') % 2 == 1][:20]
    assert len(rows) == 20
    path = tmp_path / "quotes.tsv"
    path.write_text(
        "sentence1\tsentence2\tscore\n"
        + "".join(f"{r['sentence1']}\t{r['sentence2']}\t{r['score']}\n" for r in rows)
    )
    record = validate(path, tmp_path, score_range=(0, 5))
    assert record.rows == 20
    assert pq.read_table(record.clean_path)["sentence1"][0].as_py() == rows[0]["sentence1"]


def test_duplicates_and_equal_texts_are_dropped_and_counted(tmp_path):
    rows = stsb_rows("train", 20)
    rows.append(dict(rows[0]))  # exact duplicate
    rows.append({"sentence1": "  Same Text ", "sentence2": "same text", "score": "5"})
    path = write_csv(tmp_path / "d.csv", rows)
    record = validate(path, tmp_path, score_range=(0, 5))
    assert record.dropped == {"duplicates": 1, "equal_texts": 1}
    assert record.rows == 20
    dup = next(f for f in record.findings if f.code == "duplicates")
    assert dup.rows == [21]


def stsb_test_set(tmp_path: Path, rows: int = 30) -> tuple[list[dict], object]:
    """The first rows of STS-B test, loaded as an evaluation set."""
    test_rows = stsb_rows("test", rows)
    es, _ = load_eval_set(
        DataSpec(path=str(write_csv(tmp_path / "test.csv", test_rows)), score_range=(0, 5)),
        tmp_path / "eval",
    )
    return test_rows, es


def test_leakage_pairs_and_anchor_queries_are_dropped(tmp_path):
    test_rows, es = stsb_test_set(tmp_path)
    train = stsb_rows("train", 20)
    # The same pair, reversed and re-cased, is still the same pair.
    train.append(
        {
            "sentence1": test_rows[0]["sentence2"].upper(),
            "sentence2": test_rows[0]["sentence1"],
            "score": "1",
        }
    )
    path = write_csv(tmp_path / "train.csv", train)
    record = validate_training_data(
        DataSpec(path=str(path), score_range=(0, 5)),
        "new",
        tmp_path / "clean.parquet",
        leakage=LeakageIndex.from_eval_sets([es]),
    )
    assert record.dropped["leakage"] == 1
    assert record.rows == 20


def test_texts_of_two_different_evaluation_pairs_are_not_leakage(tmp_path):
    test_rows, es = stsb_test_set(tmp_path)
    train = stsb_rows("train", 20)
    # Both texts occur in the evaluation set, but never together: a new pair, kept.
    crossed = {"sentence1": test_rows[0]["sentence1"], "sentence2": test_rows[1]["sentence2"]}
    train.append({**crossed, "score": "2"})
    # A real evaluation pair, twice: the copy counts as a duplicate, the first as leakage.
    leaked = {"sentence1": test_rows[2]["sentence1"], "sentence2": test_rows[2]["sentence2"]}
    train += [{**leaked, "score": "3"}, {**leaked, "score": "3"}]
    # An evaluation pair whose texts are also equal to each other counts as equal texts.
    train.append({"sentence1": " Twice ", "sentence2": "twice", "score": "1"})
    path = write_csv(tmp_path / "train.csv", train)
    index = LeakageIndex.from_eval_sets([es])
    index.add_pairs(pa.chunked_array([["twice"]]), pa.chunked_array([["TWICE"]]))
    record = validate_training_data(
        DataSpec(path=str(path), score_range=(0, 5)), "new", tmp_path / "c.parquet", index
    )
    assert record.dropped == {"leakage": 1, "duplicates": 1, "equal_texts": 1}
    by_code = {f.code: f.rows for f in record.findings if f.code in record.dropped}
    assert by_code == {"leakage": [22], "duplicates": [23], "equal_texts": [24]}
    kept = pq.read_table(record.clean_path).to_pylist()
    assert record.rows == len(kept) == 21
    assert any(r["sentence2"] == crossed["sentence2"] for r in kept)


def test_case_folding_covers_text_beyond_ascii(tmp_path):
    rows = [
        {"sentence1": "ÉCOLE ÉTÉ", "sentence2": "école été", "score": "1"},
        {"sentence1": "ΟΔΟΣ", "sentence2": "οδος", "score": "1"},  # final sigma: σ and ς
        {"sentence1": "Die Straße", "sentence2": "DIE STRASSE", "score": "1"},
        {"sentence1": "Plain words", "sentence2": "PLAIN WORDS\u00a0", "score": "1"},
        {"sentence1": "A kept pair", "sentence2": "another text", "score": "1"},
        {"sentence1": "Straße", "sentence2": "Strasse und Weg", "score": "1"},
    ]
    path = write_jsonl(tmp_path / "u.jsonl", rows)
    record = validate(path, tmp_path)
    assert record.dropped == {"equal_texts": 4}
    assert record.rows == 2


def test_case_folding_holds_across_files_and_batches(tmp_path):
    """Each file (and each batch of a large file) is a chunk of its own: folding must align."""
    write_csv(tmp_path / "in" / "a.csv", [{"anchor": "what is a café", "positive": "a place"}])
    write_csv(tmp_path / "in" / "b.csv", [{"anchor": "what is tea", "positive": "a drink"}])
    rows = [{"anchor": f"question {i}", "positive": f"answer {i}"} for i in range(70_000)]
    rows[69_000] = {"anchor": "Die Straße", "positive": "DIE STRASSE"}
    rows[69_001] = {"anchor": "Café", "positive": "cafe\u0301"}  # é as e and an accent
    write_jsonl(tmp_path / "in" / "c.jsonl", rows)
    record = validate(tmp_path / "in", tmp_path)
    assert record.dropped == {"equal_texts": 2}
    assert record.rows == 70_000
    kept = pq.read_table(record.clean_path)["anchor"].to_pylist()
    assert "what is a café" in kept and "Die Straße" not in kept


def test_duplicates_with_different_scores_are_reported(tmp_path):
    rows = stsb_rows("train", 10)
    rows.append({**rows[0], "score": "0.5"})  # the same pair, another score
    rows.append(dict(rows[1]))  # the same pair, the same score
    path = write_csv(tmp_path / "d.csv", rows)
    record = validate(path, tmp_path, score_range=(0, 5))
    dup = next(f for f in record.findings if f.code == "duplicates")
    assert dup.count == 2 and dup.rows == [11, 12]
    assert "1 of these pairs have copies with different scores" in dup.message
    kept = pq.read_table(record.clean_path)["score"][0].as_py()
    assert kept == pytest.approx(float(rows[0]["score"]) / 5)


def test_drop_findings_say_where_the_first_rows_are(tmp_path):
    rows = stsb_rows("train", 12)
    one = write_csv(tmp_path / "one.csv", [*rows, rows[3], rows[5]])
    single = validate(one, tmp_path, score_range=(0, 5))
    dup = next(f for f in single.findings if f.code == "duplicates")
    assert dup.message.endswith("; rows 13, 14")
    write_csv(tmp_path / "in" / "a.csv", rows[:6])
    # b.csv row 2 repeats a.csv row 3; b.csv row 4 repeats b.csv row 1.
    write_csv(tmp_path / "in" / "b.csv", [rows[7], rows[2], *rows[6:]])
    several = validate(tmp_path / "in", tmp_path, score_range=(0, 5))
    dup = next(f for f in several.findings if f.code == "duplicates")
    assert dup.message.endswith("; b.csv row 2, b.csv row 4")
    assert dup.rows == [2, 4]


def test_every_label_column_of_a_pairs_file_must_say_positive(tmp_path):
    good = ["1", "+1", "01", "1.00", "1e0", "TRUE", " yes ", "positive"]
    rows = [
        {"anchor": f"q{i}", "positive": f"a{i}", "score": "1", "label": label}
        for i, label in enumerate(good)
    ]
    assert validate(write_csv(tmp_path / "ok.csv", rows), tmp_path).rows == len(good)
    rows[2]["label"], rows[5]["score"] = "0", "2"
    error = error_of(write_csv(tmp_path / "bad.csv", rows), tmp_path)
    assert "2 problems" in error.problem
    assert "row 3, column 'label'" in error.problem and "row 6, column 'score'" in error.problem
    decimal = pa.table(
        {
            "anchor": ["q1", "q2"],
            "positive": ["a1", "a2"],
            "label": pa.array([Decimal("1.00"), Decimal("1")], pa.decimal128(5, 2)),
        }
    )
    pq.write_table(decimal, tmp_path / "d.parquet")
    assert validate(tmp_path / "d.parquet", tmp_path).rows == 2


def test_drop_findings_tell_apart_files_of_one_name_in_two_folders(tmp_path):
    rows = stsb_rows("train", 6)
    write_csv(tmp_path / "in" / "sub1" / "x.csv", rows[:3])
    write_csv(tmp_path / "in" / "sub2" / "x.csv", rows[3:] + [rows[4]])
    record = validate(tmp_path / "in", tmp_path, score_range=(0, 5))
    dup = next(f for f in record.findings if f.code == "duplicates")
    assert dup.message.startswith("1 exact duplicate row dropped")
    assert dup.message.endswith("; sub2/x.csv row 4")


def test_hidden_files_in_a_data_directory_are_not_data(tmp_path):
    rows = stsb_rows("train", 12)
    write_csv(tmp_path / "in" / "train.csv", rows[:10])
    write_csv(tmp_path / "in" / ".ipynb_checkpoints" / "train-checkpoint.csv", rows[10:])
    (tmp_path / "in" / "._train.csv").write_bytes(b"\x00\x05\x16\x07 resource fork")
    record = validate(tmp_path / "in", tmp_path, score_range=(0, 5))
    assert [Path(f.uri).name for f in record.files] == ["train.csv"]
    assert record.rows == 10
    # A pattern that names a hidden folder asks for it.
    asked = validate(tmp_path / "in" / ".ipynb*" / "*.csv", tmp_path, score_range=(0, 5))
    assert [Path(f.uri).name for f in asked.files] == ["train-checkpoint.csv"]


def test_a_pipe_or_a_broken_link_in_a_data_directory_is_refused(tmp_path):
    write_csv(tmp_path / "in" / "a.csv", stsb_rows("train", 5))
    os.mkfifo(tmp_path / "in" / "b.csv")
    error = error_of(tmp_path / "in", tmp_path, score_range=(0, 5))
    assert "b.csv" in str(error) and "not a regular file" in error.problem
    (tmp_path / "in" / "b.csv").unlink()
    (tmp_path / "in" / "b.csv").symlink_to(tmp_path / "in" / "gone.csv")
    error = error_of(tmp_path / "in", tmp_path, score_range=(0, 5))
    assert "b.csv" in str(error) and "link to nothing" in error.problem


def test_every_file_of_a_data_set_is_recorded_with_its_own_sha256(tmp_path):
    rows = stsb_rows("train", 30)
    paths = [
        write_csv(tmp_path / "in" / "a.csv", rows[:10]),
        write_csv(tmp_path / "in" / "b.csv", rows[10:25]),
        write_csv(tmp_path / "in" / "c.csv", rows[25:]),
    ]
    record = validate(tmp_path / "in", tmp_path, score_range=(0, 5))
    assert [(Path(f.uri).name, f.sha256, f.rows) for f in record.files] == [
        (p.name, digest(p), n) for p, n in zip(paths, (10, 15, 5), strict=True)
    ]


def test_shared_retrieval_corpus_is_not_leakage_but_queries_are(tmp_path):
    data = Path(__file__).resolve().parents[1] / "examples" / "data" / "scifact" / "test"
    es, _ = load_eval_set(
        RetrievalSpec(
            name="scifact-test",
            queries=str(data / "queries.jsonl"),
            corpus=str(data / "corpus.jsonl"),
            qrels=str(data / "qrels.tsv"),
        ),
        tmp_path / "eval",
    )
    assert es.kind == "retrieval" and es.rows == 300
    query = pq.read_table(es.files["queries"])["text"][0].as_py()
    pairs = scifact_pairs(40)  # their positives are abstracts of the shared corpus
    pairs.append({"anchor": query, "positive": pairs[0]["positive"] + " (copy)"})
    path = write_jsonl(tmp_path / "train.jsonl", pairs)
    record = validate_training_data(
        DataSpec(path=str(path)),
        "new",
        tmp_path / "clean.parquet",
        leakage=LeakageIndex.from_eval_sets([es]),
    )
    assert record.dropped.get("leakage") == 1
    assert record.rows == len({p["anchor"] + p["positive"] for p in pairs}) - 1


def test_qrels_naming_unknown_documents_is_an_error(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"_id": "1", "text": "a claim"}])
    write_jsonl(tmp_path / "c.jsonl", [{"_id": "10", "title": "t", "text": "an abstract"}])
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t99\t1\n")
    with pytest.raises(DataError) as info:
        load_eval_set(
            RetrievalSpec(
                queries=str(tmp_path / "q.jsonl"),
                corpus=str(tmp_path / "c.jsonl"),
                qrels=str(tmp_path / "qrels.tsv"),
            ),
            tmp_path / "eval",
        )
    assert "row 2" in str(info.value) and "column 'corpus-id'" in str(info.value)


def test_parquet_of_many_row_groups_is_read_batch_by_batch_in_file_order(tmp_path):
    """Parquet is streamed page by page; batches cross row-group boundaries in order."""
    from refit.dataio import ROW, expand, iter_batches

    rows = stsb_rows("train", 350)
    table = pa.table(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "score": [float(r["score"]) for r in rows],
        }
    )
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    spec = DataSpec(path=str(path), score_range=(0, 5))
    (ref,) = expand(spec)
    batches = list(iter_batches(ref, spec, batch_rows=64))
    assert max(b.num_rows for b in batches) <= 64
    read = pa.Table.from_batches(batches)
    assert read[ROW].to_pylist() == list(range(1, 351))
    assert read["sentence1"].to_pylist() == table["sentence1"].to_pylist()
    record = validate(path, tmp_path, score_range=(0, 5))
    assert record.rows + sum(record.dropped.values()) == 350


def test_parquet_scores_cast_to_float32_are_reported(tmp_path):
    rows = stsb_rows("train", 30)
    table = pa.table(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "score": pa.array([round(float(r["score"])) for r in rows], pa.int64()),
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    record = validate(path, tmp_path, score_range=(0, 5))
    cast = next(f for f in record.findings if f.code == "score_cast")
    assert "int64" in cast.message and "float32" in cast.message


def test_long_texts_warn_above_ten_percent(tmp_path, tiny_model):
    pairs = scifact_pairs(40)  # abstracts: far longer than 32 tokens
    path = write_jsonl(tmp_path / "p.jsonl", pairs)
    record = validate_training_data(
        DataSpec(path=str(path)), "new", tmp_path / "c.parquet", None, str(tiny_model), 32
    )
    long = next(f for f in record.findings if f.code == "long_texts")
    assert long.level == "warning"
    assert "max_seq_length 32" in long.message


def test_directory_and_glob_read_every_file(tmp_path):
    rows = stsb_rows("train", 30)
    write_csv(tmp_path / "in" / "a.csv", rows[:10])
    write_csv(tmp_path / "in" / "b.csv", rows[10:30])
    assert validate(tmp_path / "in", tmp_path, score_range=(0, 5)).rows == 30
    glob = validate_training_data(
        DataSpec(path=str(tmp_path / "in" / "b*.csv"), score_range=(0, 5)),
        "new",
        tmp_path / "g.parquet",
    )
    assert glob.rows == 20 and len(glob.files) == 1


def test_fsspec_memory_url(tmp_path):
    import fsspec

    rows = stsb_rows("train", 12)
    with fsspec.open("memory://landing/stsb.csv", "w") as fh:
        fh.write("sentence1,sentence2,score\n")
        for r in rows:
            fh.write(
                json.dumps(r["sentence1"]) + "," + json.dumps(r["sentence2"]) + f",{r['score']}\n"
            )
    record = validate_training_data(
        DataSpec(path="memory://landing/stsb.csv", score_range=(0, 5)),
        "new",
        tmp_path / "m.parquet",
    )
    assert record.rows == 12
    assert record.files[0].uri == "memory://landing/stsb.csv"


def test_holdout_never_splits_an_anchor(tmp_path):
    pairs = scifact_pairs()  # several claims cite more than one abstract
    path = write_jsonl(tmp_path / "p.jsonl", pairs)
    record = validate(path, tmp_path)
    train, es, _ = split_holdout(record, 0.1, 42, tmp_path / "eval", origin="test")
    held = set(pq.read_table(es.files["data"])["anchor"].to_pylist())
    kept = set(pq.read_table(train.clean_path)["anchor"].to_pylist())
    assert held and not held & kept
    assert train.rows + es.rows == record.rows
    assert abs(es.rows - 0.1 * record.rows) <= 5


def test_first_run_holds_out_original_data_as_a_weak_signal(tmp_path):
    from refit.config import RefitConfig

    original = write_csv(tmp_path / "orig.csv", stsb_rows("train", 200))
    new = write_jsonl(tmp_path / "new.jsonl", scifact_pairs(200))
    cfg = RefitConfig(
        new_data=[str(new)],
        original_data=[{"path": str(original), "score_range": [0, 5]}],
    )
    prepared = prepare_data(cfg, [], tmp_path / "run", None, None, first_run=True)
    names = {es.name: es for es in prepared.eval_sets}
    assert names["orig-heldout"].weak is True
    assert "weaker signal" in names["orig-heldout"].origin
    assert names["new-heldout"].weak is False
    assert prepared.base_eval_sets == [names["orig-heldout"]]
    dropped = sum(prepared.original[0].dropped.values())
    assert prepared.original[0].rows + names["orig-heldout"].rows + dropped == 200


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(texts, texts), min_size=1, max_size=8),
    fmt=st.sampled_from(["csv", "jsonl"]),
)
def test_the_validator_never_accepts_a_row_with_an_empty_text(tmp_path, rows, fmt):
    path = tmp_path / f"prop.{fmt}"
    records = [{"anchor": a, "positive": p} for a, p in rows]
    if fmt == "csv":
        write_csv(path, records, ["anchor", "positive"])
    else:
        write_jsonl(path, records)
    has_empty = any(not a.strip() or not p.strip() for a, p in rows)
    try:
        record = validate_training_data(DataSpec(path=str(path)), "new", tmp_path / "p.parquet")
    except DataError as exc:
        if has_empty:
            assert "empty" in str(exc) or "null" in str(exc)
        return
    assert not has_empty, "a row with an empty text was accepted"
    table = pq.read_table(record.clean_path)
    for column in ("anchor", "positive"):
        assert all(t.strip() for t in table[column].to_pylist())


def test_a_small_delivery_gets_no_meaningless_holdout(tmp_path):
    from refit.config import RefitConfig

    new = write_jsonl(tmp_path / "new.jsonl", scifact_pairs(30))
    prepared = prepare_data(
        RefitConfig(new_data=[str(new)]), [], tmp_path / "run", None, None, first_run=False
    )
    assert prepared.eval_sets == []
    assert prepared.new[0].rows == 30
    warning = next(f for f in prepared.new[0].findings if f.code == "no_holdout")
    assert "too few to hold out" in warning.message


def test_an_unclosed_quote_that_swallows_rows_is_an_error(tmp_path):
    rows = ["sentence1,sentence2,score"] + [f"s{i} one,s{i} two,0.5" for i in range(50)]
    rows[30] = '"Opened quote here,s30 two,0.5'
    rows[40] = 's40 one closes",s40 two,0.5'
    path = tmp_path / "swallow.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        validate(path, tmp_path)
    assert "row 30, column 'sentence1'" in str(info.value)
    assert "swallows the rows after it" in str(info.value)


def test_an_evaluation_set_with_constant_scores_is_refused(tmp_path):
    rows = [dict(r, score="3") for r in stsb_rows("test", 20)]
    with pytest.raises(DataError) as info:
        load_eval_set(
            DataSpec(path=str(write_csv(tmp_path / "t.csv", rows)), score_range=(0, 5)),
            tmp_path / "eval",
        )
    assert "every score in the evaluation set is the same" in str(info.value)
    assert "column 'score'" in str(info.value)
