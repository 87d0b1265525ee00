"""The training process: ``python -m refit.train_worker SPEC.json``.

Training runs in its own process so that a timeout can really stop it, a crash cannot take the
flow down with it, and all of its memory (GPU memory included) is returned when it exits. It
talks to its parent through JSON lines on stdout: ``progress`` events while it trains, then one
``done`` or ``error`` event. Checkpoints are written every ``checkpoint_steps`` into the work
directory; started again with the same spec, it resumes from the newest one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_NON_FINITE = 3
EXIT_ERROR = 2
IN_BATCH_LOSSES = (
    "MultipleNegativesRankingLoss",
    "CachedMultipleNegativesRankingLoss",
    "MultipleNegativesSymmetricRankingLoss",
    "CachedMultipleNegativesSymmetricRankingLoss",
    "GISTEmbedLoss",
    "CachedGISTEmbedLoss",
)
INPUT_COLUMNS = {
    "scored_pairs": ["sentence1", "sentence2", "score"],
    "pairs": ["anchor", "positive"],
    "triplets": ["anchor", "positive", "negative"],
    "texts": ["sentence"],
}


RANK = int(os.environ.get("RANK", "0"))
WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def emit(event: str, **fields: Any) -> None:
    """One event line for the parent; in a distributed run only rank 0 speaks."""
    if RANK == 0:
        print(json.dumps({"event": event, **fields}), flush=True)


class NonFiniteLoss(RuntimeError):
    pass


def loss_class(name: str):
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import losses
    cls = getattr(losses, name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"unknown loss '{name}'")
    return cls


def distill_loss(model, weight: float):
    """1 - cosine similarity to the champion's embeddings (the labels), times ``weight``."""
    base = loss_class("EmbedDistillLoss")

    class WeightedEmbedDistillLoss(base):
        def forward(self, sentence_features, labels):
            return weight * super().forward(sentence_features, labels)

    return WeightedEmbedDistillLoss(model, distance_metric="cosine")


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def precision(torch) -> dict[str, bool]:
    """bf16 where the GPU supports it, else fp16 on a GPU; full precision on the CPU."""
    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    if torch.cuda.is_bf16_supported():
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def freeze(model, embeddings: bool, layers: int) -> int:
    """Freeze the word embeddings and the first ``layers`` transformer layers; returns how many
    parameters no longer train."""
    backbone = model[0].auto_model
    frozen = 0
    targets = []
    if embeddings and hasattr(backbone, "embeddings"):
        targets.append(backbone.embeddings)
    encoder_layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers and encoder_layers is not None:
        targets.extend(list(encoder_layers)[:layers])
    for module in targets:
        for param in module.parameters():
            if param.requires_grad:
                param.requires_grad = False
                frozen += param.numel()
    return frozen


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

    try:
        from sentence_transformers.base.sampler import BatchSamplers
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.training_args import BatchSamplers

    work = Path(spec["work_dir"])
    checkpoints = work / "checkpoints"
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(work / "tensorboard"))
    torch.manual_seed(spec["seed"])

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(
        spec["base_model"],
        device=device,
        trust_remote_code=spec.get("trust_remote_code", False),
        model_kwargs={"use_safetensors": not spec.get("trust_remote_code", False)},
    )
    if spec.get("max_seq_length"):
        model.max_seq_length = spec["max_seq_length"]
    frozen = freeze(model, spec.get("freeze_embeddings", False), spec.get("freeze_layers", 0))

    train_sets, loss_fns = {}, {}
    distill_texts = 0
    for ds in spec["datasets"]:
        data = Dataset.from_parquet(ds["path"])
        data = data.select_columns(INPUT_COLUMNS[ds["structure"]])
        if ds["structure"] == "texts":
            # Distillation targets: the champion's embeddings, taken before any step is made
            # (also on a resume, where the base model is loaded afresh before the checkpoint).
            labels = model.encode(data["sentence"], batch_size=64, convert_to_numpy=True)
            data = data.add_column("label", labels.tolist())
            distill_texts = len(data)
            loss_fns[ds["name"]] = distill_loss(model, ds["weight"])
        else:
            loss_fns[ds["name"]] = loss_class(ds["loss"])(model)
        train_sets[ds["name"]] = data
    single = len(train_sets) == 1
    train_dataset = next(iter(train_sets.values())) if single else DatasetDict(train_sets)
    loss = next(iter(loss_fns.values())) if single else loss_fns
    in_batch = any(ds["loss"] in IN_BATCH_LOSSES for ds in spec["datasets"])

    warmup: dict[str, float] = {}
    if int(transformers.__version__.split(".")[0]) >= 5:
        warmup["warmup_steps"] = spec["warmup_ratio"]
    else:
        warmup["warmup_ratio"] = spec["warmup_ratio"]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=spec["epochs"],
        max_steps=spec.get("max_steps") or -1,
        per_device_train_batch_size=max(1, spec["batch_size"] // WORLD_SIZE),
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=spec["checkpoint_steps"],
        save_total_limit=2,
        logging_steps=spec["logging_steps"],
        logging_nan_inf_filter=False,
        report_to=["tensorboard"],
        seed=spec["seed"],
        data_seed=spec["seed"],
        use_cpu=device == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES if in_batch else BatchSamplers.BATCH_SAMPLER,
        dataloader_drop_last=False,
        disable_tqdm=True,
        ddp_backend=("gloo" if device == "cpu" else "nccl") if WORLD_SIZE > 1 else None,
        **precision(torch),
        **warmup,
    )

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            value = logs.get("loss")
            if value is not None and not math.isfinite(value):
                raise NonFiniteLoss(f"the training loss became {value} at step {state.global_step}")
            emit(
                "progress",
                step=state.global_step,
                total=state.max_steps,
                loss=value,
                learning_rate=logs.get("learning_rate"),
                epoch=state.epoch,
            )

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        loss=loss,
        callbacks=[Progress()],
    )
    resume = latest_checkpoint(checkpoints)
    emit(
        "start",
        pid=os.getpid(),
        resume_from=str(resume) if resume else None,
        device=device,
        frozen=frozen,
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    if not math.isfinite(result.training_loss):
        raise NonFiniteLoss(f"the mean training loss is {result.training_loss}")

    output = Path(spec["output_dir"])
    if RANK != 0:
        return {"rank": RANK}
    model.save(str(output), safe_serialization=True)
    history = [
        {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    summary = {
        "global_step": trainer.state.global_step,
        "training_loss": result.training_loss,
        "train_seconds": seconds,
        "samples": sum(len(d) for d in train_sets.values()),
        "resumed_from": str(resume) if resume else None,
        "device": device,
        "world_size": trainer.args.world_size,
        "frozen_parameters": frozen,
        "distill_texts": distill_texts,
        "history": history,
        **precision(torch),
    }
    (output / "refit_training.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        summary = run(spec)
    except NonFiniteLoss as exc:
        emit("error", kind="non_finite_loss", message=str(exc))
        return EXIT_NON_FINITE
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        traceback.print_exc(file=sys.stderr)
        emit("error", kind=type(exc).__name__, message=str(exc))
        return EXIT_ERROR
    emit("done", **{k: v for k, v in summary.items() if k != "history"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
