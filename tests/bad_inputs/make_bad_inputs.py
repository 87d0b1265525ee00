"""Write the malformed data files of this folder and cases.json, the outcome each must have.

    python tests/bad_inputs/make_bad_inputs.py

Every file is built from real STS-B or SciFact rows with one fault. The outcome is "error" (the
run stops; the message must hold every listed word), "warning" (training can safely go on; a
finding with the listed code must be reported) or "ok". The 10 MB line and the symlink are made
by the test itself, so that the repository holds neither.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "examples" / "data"


def stsb(n: int = 12) -> list[dict[str, str]]:
    with open(DATA / "stsb" / "train.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))[:n]


def pairs(n: int = 12) -> list[dict[str, str]]:
    with open(DATA / "scifact" / "train.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh][:n]


def to_csv(rows: list[dict], columns: list[str], delimiter: str = ",", newline: str = "\n") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator=newline)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    return buf.getvalue()


S3 = ["sentence1", "sentence2", "score"]
CASES: list[dict] = []


def case(name: str, content: bytes | str | None, outcome: str, words: list[str], **spec) -> None:
    if content is not None:
        path = HERE / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    CASES.append({"file": name, "outcome": outcome, "words": words, "spec": spec})


def parquet(name: str, table: pa.Table, outcome: str, words: list[str], **spec) -> None:
    pq.write_table(table, HERE / name)
    case(name, None, outcome, words, **spec)


def main() -> None:
    rows = stsb()
    r5 = {"score_range": [0, 5]}

    case("semicolon.csv", to_csv(rows, S3, ";"), "error", ["';'-separated", "delimiter"], **r5)
    case("missing_score.csv", to_csv(rows, S3[:2]), "error", ["missing column", "score", "Fix"])
    renamed = [
        {"text_a": r["sentence1"], "text_b": r["sentence2"], "sim": r["score"]} for r in rows
    ]
    case(
        "renamed_columns.csv",
        to_csv(renamed, ["text_a", "text_b", "sim"]),
        "error",
        ["missing column", "columns"],
    )
    extra = [dict(r, source="stsb", note="x") for r in rows]
    case(
        "extra_columns.csv",
        to_csv(extra, [*S3, "source", "note"]),
        "warning",
        ["extra_columns"],
        **r5,
    )
    case("bom.csv", "\ufeff" + to_csv(rows, S3), "ok", [], **r5)
    case("crlf.csv", to_csv(rows, S3, newline="\r\n"), "ok", [], **r5)
    case(
        "latin1.csv",
        to_csv([dict(rows[0], sentence1="Un café crème")] + rows[1:], S3).encode(
            "latin-1", errors="replace"
        ),
        "error",
        ["not valid UTF-8", "row 1", "iconv"],
        **r5,
    )
    broken = (
        to_csv(rows, S3)
        + '"An unclosed quote, then, more,0.5\n'
        + to_csv(rows, S3).split("\n", 1)[1]
    )
    case("unclosed_quote.csv", broken, "error", ["row 13", "number of fields", ".tsv"], **r5)
    stray = "sentence1\tsentence2\tscore\n" + "".join(
        f'He said "stop {i}\tThe man "shouted {i}\t{i % 5}\n' for i in range(12)
    )
    case("stray_quotes.tsv", stray, "ok", [], **r5)
    empty_text = [dict(r) for r in rows]
    empty_text[3]["sentence2"] = ""
    case(
        "empty_text.csv",
        to_csv(empty_text, S3),
        "error",
        ["row 4", "column 'sentence2'", "empty", "Fix"],
        **r5,
    )
    blank = [dict(r) for r in rows]
    blank[6]["sentence1"] = " \t\u3000 "
    case(
        "whitespace_text.csv",
        to_csv(blank, S3),
        "error",
        ["row 7", "column 'sentence1'", "whitespace"],
        **r5,
    )
    ints = [dict(r, score=str(round(float(r["score"])))) for r in rows]
    case("int_scores.csv", to_csv(ints, S3), "ok", [], **r5)
    high = [dict(r) for r in rows]
    high[2]["score"] = "7.5"
    case(
        "out_of_range.csv",
        to_csv(high, S3),
        "error",
        ["row 3", "column 'score'", "outside the declared range [0, 5]", "score_range"],
        **r5,
    )
    case(
        "scores_0_5_undeclared.csv",
        to_csv(rows, S3),
        "error",
        ["outside the declared range [0, 1]", "score_range: [0, 5]"],
    )
    for label, value in (("word", "high"), ("nan", "NaN"), ("inf", "inf"), ("comma", "3,5")):
        bad = [dict(r) for r in rows]
        bad[5]["score"] = value
        case(
            f"score_{label}.csv",
            to_csv(bad, S3),
            "error",
            ["row 6", "column 'score'", "not a number"],
            **r5,
        )
    missing = [dict(r) for r in rows]
    missing[0]["score"] = ""
    case(
        "score_missing.csv",
        to_csv(missing, S3),
        "error",
        ["row 1", "column 'score'", "missing"],
        **r5,
    )
    case("empty.csv", b"", "error", ["empty", "header"])
    case("header_only.csv", "sentence1,sentence2,score\n", "error", ["no usable rows", "header"])
    case(
        "header_no_newline.csv", "sentence1,sentence2,score", "error", ["no usable rows", "header"]
    )
    rng = random.Random(0)
    case("binary_junk.csv", bytes(rng.randrange(256) for _ in range(4096)), "error", ["Fix"])
    dup = rows + [rows[0], rows[1]]
    case("duplicates.csv", to_csv(dup, S3), "warning", ["duplicates"], **r5)
    same = rows + [
        {
            "sentence1": "A man plays a guitar.",
            "sentence2": "  a MAN plays a guitar. ",
            "score": "5",
        }
    ]
    case("equal_texts.csv", to_csv(same, S3), "warning", ["equal_texts"], **r5)
    all_dupes = [rows[0]] * 4
    case("only_duplicates_of_one_row.csv", to_csv(all_dupes, S3), "warning", ["duplicates"], **r5)
    case("notes.txt", to_csv(rows, S3), "error", ["unknown file type", ".txt"])
    case("cr_only.csv", to_csv(rows, S3, newline="\r"), "error", ["carriage return", "tr"])
    case(
        "reserved_column.csv",
        to_csv([dict(r, __row="1") for r in rows], [*S3, "__row"]),
        "error",
        ["column '__row'", "reserved", "rename"],
        **r5,
    )
    swallow = to_csv(rows, S3).splitlines()
    swallow[4] = '"' + swallow[4]
    swallow[8] = swallow[8].replace(",", '",', 1)
    case(
        "quote_swallows_rows.csv",
        "\n".join(swallow) + "\n",
        "error",
        ["row 4", "swallows the rows after it"],
        **r5,
    )

    # JSON Lines variants.
    p = pairs()
    jl = lambda items: "".join(json.dumps(i) + "\n" for i in items)  # noqa: E731
    nulls = [dict(i) for i in p]
    nulls[4]["positive"] = None
    case("null_text.jsonl", jl(nulls), "error", ["row 5", "column 'positive'", "null"])
    case(
        "broken_line.jsonl",
        jl(p[:3]) + '{"anchor": "x", "positive": \n' + jl(p[3:]),
        "error",
        ["line 4", "not valid JSON"],
    )
    case(
        "array_line.jsonl",
        jl(p[:2]) + '["anchor", "positive"]\n',
        "error",
        ["line 3", "not an object"],
    )
    case(
        "empty_text.jsonl",
        jl(p[:5] + [{"anchor": "   ", "positive": "x y z"}]),
        "error",
        ["row 6", "column 'anchor'", "empty"],
    )
    numbers = [{"anchor": i, "positive": i + 1} for i in range(10)]
    case("numbers_as_text.jsonl", jl(numbers), "error", ["not text", "column 'anchor'"])
    case("bom.jsonl", "\ufeff" + jl(p), "ok", [])
    mixed = [dict(i) for i in p]
    mixed[2]["anchor"] = ["a", "list"]
    mixed[5]["positive"] = True
    case(
        "mixed_types.jsonl",
        jl(mixed),
        "error",
        ["2 problems", "row 3, column 'anchor'", "row 6, column 'positive'", "where text belongs"],
    )
    case(
        "json_array.jsonl", json.dumps(p[:3], indent=1), "error", ["line 1", "one JSON array", "jq"]
    )
    scored = [
        {"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": r["score"]}
        for r in rows
    ]
    case("scores_as_strings.jsonl", jl(scored), "ok", [], **r5)
    case("leak.jsonl", jl(p), "warning", ["leakage"], leak_from="self")
    case("empty.jsonl", "\n\n", "error", ["empty", "no rows", "one JSON object per line"])
    labelled = [
        dict(item, label=(n + 1) % 2) for n, item in enumerate(p)
    ]  # 1, 0, 1, 0, ...; 0: wrong
    case(
        "labelled_pairs.jsonl",
        jl(labelled),
        "error",
        ["column 'label'", "not positive", "rows 2, 4", "score: label"],
    )
    case("positive_labels.jsonl", jl([dict(i, label=1) for i in p]), "ok", [])
    surrogate = jl(p[:3]) + '{"anchor": "cut \\ud83d in two", "positive": "x y"}\n'
    case(
        "lone_surrogate.jsonl",
        surrogate,
        "error",
        ["row 4", "column 'anchor'", "half of a character"],
    )
    huge = [dict(s, score=99999999999999999999 if i == 2 else 3) for i, s in enumerate(scored)]
    case("huge_integer_score.jsonl", jl(huge), "error", ["row 3", "column 'score'"], **r5)

    # Parquet variants.
    def stsb_table(scores: pa.Array, s1=None, s2=None) -> pa.Table:
        return pa.table(
            {
                "sentence1": s1 if s1 is not None else pa.array([r["sentence1"] for r in rows]),
                "sentence2": s2 if s2 is not None else pa.array([r["sentence2"] for r in rows]),
                "score": scores,
            }
        )

    floats = pa.array([float(r["score"]) for r in rows], pa.float64())
    parquet("float64_scores.parquet", stsb_table(floats), "warning", ["score_cast"], **r5)
    category = pa.array([r["sentence1"] for r in rows]).dictionary_encode()
    parquet(
        "category_text.parquet", stsb_table(floats, s1=category), "warning", ["score_cast"], **r5
    )
    parquet(
        "int_scores.parquet",
        stsb_table(pa.array([round(float(r["score"])) for r in rows])),
        "warning",
        ["score_cast"],
        **r5,
    )
    null_s2 = pa.array([None if i == 2 else r["sentence2"] for i, r in enumerate(rows)])
    parquet(
        "null_text.parquet",
        stsb_table(floats, s2=null_s2),
        "error",
        ["row 3", "column 'sentence2'", "null"],
        **r5,
    )
    parquet(
        "numeric_text.parquet",
        stsb_table(floats, s1=pa.array(range(len(rows)))),
        "error",
        ["column 'sentence1'", "not text"],
        **r5,
    )
    nan_scores = pa.array(
        [float("nan") if i == 1 else float(r["score"]) for i, r in enumerate(rows)]
    )
    parquet(
        "nan_score.parquet",
        stsb_table(nan_scores),
        "error",
        ["row 2", "column 'score'", "not a number"],
        **r5,
    )
    indexed = stsb_table(floats).to_pandas().iloc[2:]  # a filtered frame keeps its row labels
    indexed.to_parquet(HERE / "pandas_index.parquet")
    case("pandas_index.parquet", None, "ok", [], **r5)
    parquet(
        "decimal_scores.parquet",
        stsb_table(floats.cast(pa.decimal128(5, 3))),
        "ok",
        [],
        **r5,
    )
    parquet(
        "uint64_scores.parquet",
        stsb_table(pa.array([2**64 - 1] + [3] * (len(rows) - 1), pa.uint64())),
        "error",
        ["row 1", "column 'score'", "outside the declared range"],
        **r5,
    )
    pq.write_table(stsb_table(floats), HERE / "truncated.parquet")
    data = (HERE / "truncated.parquet").read_bytes()
    case("truncated.parquet", data[: len(data) // 2], "error", ["Parquet"])

    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    print(f"{len(CASES)} cases written to {HERE}")


if __name__ == "__main__":
    main()
