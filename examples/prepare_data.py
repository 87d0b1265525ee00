"""Derive the example data shipped in examples/data from the public STS Benchmark and SciFact.

    python examples/prepare_data.py ../shared/data

STS-B's original files are tab-separated, without a header and without quoting (some sentences
hold unbalanced quotes); they are rewritten as standard CSV with named columns, scores kept on
their 0-5 scale. SciFact's (claim, cited abstract) training judgements become (anchor, positive)
pairs; its test split is copied in BEIR layout for retrieval evaluation.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"
STSB_COLUMNS = ["genre", "filename", "year", "id", "score", "sentence1", "sentence2"]


def stsb(source: Path) -> None:
    for split in ("train", "test"):
        with open(source / f"sts-{split}.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        with open(HERE / "stsb" / f"{split}.csv", "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["sentence1", "sentence2", "score", "genre"])
            for row in rows:
                record = dict(zip(STSB_COLUMNS, row[:7], strict=True))
                writer.writerow(
                    [record["sentence1"], record["sentence2"], record["score"], record["genre"]]
                )
        print(f"stsb/{split}.csv: {len(rows)} rows")
    shutil.copyfile(source / "LICENSE.txt", HERE / "stsb" / "LICENSE.txt")


def scifact(source: Path) -> None:
    corpus = {}
    with open(source / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc['title']} {doc['text']}".strip()
    queries = {}
    with open(source / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    with open(source / "qrels" / "train.tsv", encoding="utf-8") as fh:
        judgements = list(csv.DictReader(fh, delimiter="\t"))
    with open(HERE / "scifact" / "train.jsonl", "w", encoding="utf-8") as out:
        for j in judgements:
            pair = {"anchor": queries[j["query-id"]], "positive": corpus[j["corpus-id"]]}
            out.write(json.dumps(pair, ensure_ascii=False) + "\n")
    print(f"scifact/train.jsonl: {len(judgements)} pairs")
    with open(source / "qrels" / "test.tsv", encoding="utf-8") as fh:
        test = list(csv.DictReader(fh, delimiter="\t"))
    test_ids = {j["query-id"] for j in test}
    with (
        open(source / "queries.jsonl", encoding="utf-8") as fh,
        open(HERE / "scifact" / "test" / "queries.jsonl", "w", encoding="utf-8") as out,
    ):
        for line in fh:
            if json.loads(line)["_id"] in test_ids:
                out.write(line)
    shutil.copyfile(source / "corpus.jsonl", HERE / "scifact" / "test" / "corpus.jsonl")
    shutil.copyfile(source / "qrels" / "test.tsv", HERE / "scifact" / "test" / "qrels.tsv")
    print(f"scifact/test: {len(test_ids)} queries, {len(test)} judgements, {len(corpus)} docs")


if __name__ == "__main__":
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    stsb(shared / "stsbenchmark")
    scifact(shared / "scifact")
