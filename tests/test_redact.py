"""No credentials in errors, lineage records, reports or logs."""

from __future__ import annotations

import pytest

from refit.config import DataSpec
from refit.errors import DataError
from refit.records import SourceFile
from refit.redact import redact
from refit.tasks.validate_data import validate_training_data


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/data.csv", "wJalrXUtnFEMI"),
        ("https://user:hunter2@example.org/x.jsonl", "hunter2"),
        ("https://h/x.csv?X-Amz-Signature=abc123def&X-Amz-Expires=60", "abc123def"),
        ("gs://b/x.parquet?access_token=ya29.tok", "ya29.tok"),
        ("error in https://h/x.csv?sig=zz9 at row 4", "zz9"),
    ],
)
def test_redact_removes_the_secret_and_keeps_the_location(text, secret):
    shown = redact(text)
    assert secret not in shown
    assert "***" in shown
    assert shown.split("://")[0] == text.split("://")[0]


def test_plain_locations_are_unchanged():
    for text in ("/data/new.csv", "s3://bucket/prefix/x.csv", "memory://landing/a.csv?part=1"):
        assert redact(text) == text


def test_errors_and_lineage_records_carry_no_secret(tmp_path):
    with pytest.raises(DataError) as info:
        validate_training_data(
            DataSpec(path="memory://user:s3cr3t@landing/missing.csv"), "new", tmp_path / "c.pq"
        )
    assert "s3cr3t" not in str(info.value)
    assert "memory://***@" in str(info.value)
    assert "s3cr3t" not in SourceFile(uri="https://u:s3cr3t@h/x.csv", sha256="0").uri
