"""Every malformed file in tests/bad_inputs has the outcome cases.json gives it.

Errors stop the run before any model is loaded and name the file, the row, the column and the
fix; warnings let training go on. Input files are never modified, and nothing is promoted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from refit.config import DataSpec, RefitConfig
from refit.errors import DataError
from refit.tasks.validate_data import LeakageIndex, load_eval_set, validate_training_data

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = json.loads((HERE / "cases.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leakage_for(case: dict, tmp_path: Path) -> LeakageIndex | None:
    if case["spec"].get("leak_from") != "self":
        return None
    lines = (HERE / case["file"]).read_text().splitlines()[:3]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(lines) + "\n")
    es, _ = load_eval_set(DataSpec(path=str(eval_file)), tmp_path / "eval")
    return LeakageIndex.from_eval_sets([es])


def spec_of(case: dict, path: Path) -> DataSpec:
    return DataSpec(path=str(path), **{k: v for k, v in case["spec"].items() if k != "leak_from"})


def test_the_folder_holds_at_least_30_cases():
    assert len(CASES) >= 30
    assert all((HERE / c["file"]).is_file() for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_outcome(case, tmp_path):
    path = HERE / case["file"]
    before = sha(path)
    spec = spec_of(case, path)
    leakage = leakage_for(case, tmp_path)
    if case["outcome"] == "error":
        with pytest.raises(DataError) as info:
            validate_training_data(spec, "new", tmp_path / "clean.parquet", leakage)
        message = str(info.value)
        assert case["file"] in message, "the error names the file"
        for word in case["words"]:
            assert word in message
        assert "Fix:" in message
        assert not (tmp_path / "clean.parquet").exists()
    else:
        record = validate_training_data(spec, "new", tmp_path / "clean.parquet", leakage)
        assert record.rows > 0
        codes = {f.code for f in record.findings if f.level == "warning" or f.code in case["words"]}
        for word in case["words"]:
            assert word in codes
        if case["outcome"] == "ok":
            assert not [f for f in record.findings if f.level == "warning"]
    assert sha(path) == before, "refit never modifies its input"


def test_crlf_line_ends_do_not_leak_into_texts(tmp_path):
    import pyarrow.parquet as pq

    record = validate_training_data(
        DataSpec(path=str(HERE / "crlf.csv"), score_range=(0, 5)), "new", tmp_path / "c.parquet"
    )
    texts = pq.read_table(record.clean_path)["sentence2"].to_pylist()
    assert not any("\r" in t for t in texts)


def test_a_10_mb_line_is_read_and_flagged_as_long(tmp_path, tiny_model):
    path = tmp_path / "huge.csv"
    huge = "word " * 2_000_000
    path.write_text(f"anchor,positive\nshort question,{huge}\nanother question,a short answer\n")
    before = sha(path)
    record = validate_training_data(
        DataSpec(path=str(path)), "new", tmp_path / "c.parquet", None, str(tiny_model), 64
    )
    assert record.rows == 2
    long = next(f for f in record.findings if f.code == "long_texts")
    assert "max_seq_length 64" in long.message
    assert sha(path) == before


def test_a_symlink_out_of_the_data_directory_is_refused(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("anchor,positive\nsecret question,secret answer\n")
    (landing / "ok.csv").write_text("anchor,positive\nq,a\n")
    os.symlink(secret, landing / "link.csv")
    with pytest.raises(DataError) as info:
        validate_training_data(DataSpec(path=str(landing)), "new", tmp_path / "c.parquet")
    assert "link.csv" in str(info.value) and "outside" in str(info.value)


def test_a_file_name_that_tries_path_traversal_is_refused(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "..\\..\\etc\\cron.csv").write_text("anchor,positive\nq,a\n")
    with pytest.raises(DataError, match="path traversal"):
        validate_training_data(DataSpec(path=str(landing)), "new", tmp_path / "c.parquet")


@pytest.mark.slow
def test_bad_new_data_promotes_nothing(tiny_model, tmp_path):
    """Through the whole flow: each error case stops the run; the champion stays version 1."""
    from refit.flows.retrain import retrain
    from refit.registry import Registry

    registry = Registry(tmp_path / "reg")
    retrain(RefitConfig(model=str(tiny_model), registry=str(registry.root)))
    for case in [c for c in CASES if c["outcome"] == "error"]:
        path = HERE / case["file"]
        before = sha(path)
        spec = spec_of(case, path).model_dump()
        with pytest.raises(DataError):
            retrain(RefitConfig(registry=str(registry.root), new_data=[spec]))
        assert sha(path) == before
        assert registry.champion() == 1, case["file"]
        assert registry.version_numbers() == [1], case["file"]
