"""Evaluate the candidate and the champion on the same evaluation sets.

The evaluator follows the data: Spearman correlation of cosine similarities for scored pairs,
nDCG@10 / MRR@10 / Recall@10 for retrieval sets and for held-out (anchor, positive) pairs (the
anchors as queries, all positives as the corpus), accuracy for triplets. A version's scores on a
set are stored under the set's content key and the evaluation settings, so the champion is never
encoded again for a set it was already scored on.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from refit.records import EvalSet, Record
from refit.registry import Registry

METRICS = {
    "scored_pairs": {"spearman": "spearman_cosine", "pearson": "pearson_cosine"},
    "retrieval": {
        "ndcg@10": "cosine_ndcg@10",
        "mrr@10": "cosine_mrr@10",
        "recall@10": "cosine_recall@10",
    },
    "pairs": {
        "ndcg@10": "cosine_ndcg@10",
        "mrr@10": "cosine_mrr@10",
        "recall@10": "cosine_recall@10",
    },
    "triplets": {"accuracy": "cosine_accuracy"},
}


class ModelScores(Record):
    metrics: dict[str, dict[str, float]]
    reused: list[str]
    encoded_texts: int
    seconds: float


def score_key(eval_set: EvalSet, max_seq_length: int | None) -> str:
    return f"{eval_set.key}-L{max_seq_length or 'model'}"


def build_evaluator(eval_set: EvalSet, batch_size: int):
    try:
        from sentence_transformers.sentence_transformer.evaluation import (
            EmbeddingSimilarityEvaluator,
            InformationRetrievalEvaluator,
            TripletEvaluator,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import (
            EmbeddingSimilarityEvaluator,
            InformationRetrievalEvaluator,
            TripletEvaluator,
        )

    name = eval_set.name
    if eval_set.kind == "scored_pairs":
        t = pq.read_table(eval_set.files["data"])
        return EmbeddingSimilarityEvaluator(
            t["sentence1"].to_pylist(),
            t["sentence2"].to_pylist(),
            t["score"].to_pylist(),
            batch_size=batch_size,
            name=name,
            show_progress_bar=False,
        )
    if eval_set.kind == "triplets":
        t = pq.read_table(eval_set.files["data"])
        return TripletEvaluator(
            t["anchor"].to_pylist(),
            t["positive"].to_pylist(),
            t["negative"].to_pylist(),
            batch_size=batch_size,
            name=name,
            show_progress_bar=False,
        )
    if eval_set.kind == "retrieval":
        q = pq.read_table(eval_set.files["queries"]).to_pylist()
        c = pq.read_table(eval_set.files["corpus"]).to_pylist()
        r = pq.read_table(eval_set.files["qrels"]).to_pylist()
        queries = {row["id"]: row["text"] for row in q}
        corpus = {row["id"]: f"{row['title'] or ''} {row['text'] or ''}".strip() for row in c}
        relevant: dict[str, set[str]] = {}
        for row in r:
            relevant.setdefault(row["query"], set()).add(row["doc"])
    else:  # held-out (anchor, positive) pairs
        t = pq.read_table(eval_set.files["data"])
        doc_ids: dict[str, str] = {}
        query_ids: dict[str, str] = {}
        relevant = {}
        for anchor, positive in zip(
            t["anchor"].to_pylist(), t["positive"].to_pylist(), strict=True
        ):
            qid = query_ids.setdefault(anchor, f"q{len(query_ids)}")
            did = doc_ids.setdefault(positive, f"d{len(doc_ids)}")
            relevant.setdefault(qid, set()).add(did)
        queries = {qid: text for text, qid in query_ids.items()}
        corpus = {did: text for text, did in doc_ids.items()}
    return InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        batch_size=batch_size,
        name=name,
        show_progress_bar=False,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10],
        map_at_k=[100],
    )


def pick_metrics(eval_set: EvalSet, raw: dict[str, float]) -> dict[str, float]:
    """refit's short metric names; an undefined value (NaN: a correlation over constant
    scores, say) is left out, so that a gate check on it fails as a missing metric."""
    found = {}
    for short, suffix in METRICS[eval_set.kind].items():
        for key, value in raw.items():
            if key.endswith(suffix):
                if value is not None and math.isfinite(float(value)):
                    found[short] = float(value)
                break
    return found


def load_model(model_dir: str | Path, max_seq_length: int | None, trust_remote_code: bool):
    """A model for encoding: safetensors only unless the checkpoint is trusted; GPU if any."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(model_dir),
        device="cuda" if torch.cuda.is_available() else "cpu",
        trust_remote_code=trust_remote_code,
        model_kwargs={"use_safetensors": not trust_remote_code},
    )
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def release() -> None:
    """Return the memory of models that went out of scope (GPU memory included)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(
    model_dir: str | Path,
    eval_sets: list[EvalSet],
    batch_size: int = 64,
    max_seq_length: int | None = None,
    stored: dict[str, dict[str, float]] | None = None,
    trust_remote_code: bool = False,
) -> ModelScores:
    """Score one model on every set; sets found in ``stored`` (by score key) are not encoded."""
    import time

    stored = stored or {}
    started = time.perf_counter()
    metrics: dict[str, dict[str, float]] = {}
    reused: list[str] = []
    todo = []
    for es in eval_sets:
        key = score_key(es, max_seq_length)
        if key in stored:
            metrics[es.name] = stored[key]
            reused.append(es.name)
        else:
            todo.append(es)
    encoded = 0
    if todo:
        model = load_model(model_dir, max_seq_length, trust_remote_code)
        counter = {"texts": 0}
        encode = model.encode

        def counting_encode(inputs, *args, **kwargs):
            counter["texts"] += 1 if isinstance(inputs, str) else len(inputs)
            return encode(inputs, *args, **kwargs)

        model.encode = counting_encode
        try:
            for es in todo:
                evaluator = build_evaluator(es, batch_size)
                metrics[es.name] = pick_metrics(es, evaluator(model))
        finally:
            encoded = counter["texts"]
            del model, encode
            release()
    return ModelScores(
        metrics=metrics,
        reused=reused,
        encoded_texts=encoded,
        seconds=time.perf_counter() - started,
    )


def stored_scores(
    registry: Registry, version: int, eval_sets: list[EvalSet], max_seq_length: int | None
) -> dict[str, dict[str, float]]:
    found = {}
    for es in eval_sets:
        key = score_key(es, max_seq_length)
        value = registry.scores(version, key)
        if value is not None:
            found[key] = value
    return found


DRIFT = "embedding-drift"


def probe_texts(eval_sets: list[EvalSet], size: int, seed: int = 0) -> list[str]:
    """A fixed sample of texts from the evaluation sets: the same sets give the same probe."""
    texts: set[str] = set()
    for es in eval_sets:
        if es.kind == "retrieval":
            texts.update(pq.read_table(es.files["queries"])["text"].to_pylist())
            corpus = pq.read_table(es.files["corpus"])
            texts.update(
                f"{t or ''} {x or ''}".strip()
                for t, x in zip(
                    corpus["title"].to_pylist(), corpus["text"].to_pylist(), strict=True
                )
            )
        else:
            table = pq.read_table(es.files["data"])
            for column in table.column_names:
                if column not in ("score", "__row"):
                    texts.update(table[column].to_pylist())
    ordered = sorted(t for t in texts if t)
    if len(ordered) <= size:
        return ordered
    rng = np.random.default_rng(seed)
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size, replace=False))]


def encode_probe(
    model_dir: str | Path,
    texts: list[str],
    batch_size: int,
    max_seq_length: int | None,
    trust_remote_code: bool = False,
) -> np.ndarray:
    model = load_model(model_dir, max_seq_length, trust_remote_code)
    try:
        return model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    finally:
        del model
        release()


def embedding_drift(
    registry: Registry,
    champion_version: int,
    candidate_dir: str,
    eval_sets: list[EvalSet],
    size: int,
    batch_size: int,
    max_seq_length: int | None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Mean cosine similarity of champion and candidate embeddings of the same probe texts.

    1.0 means the candidate embeds exactly as the champion; users who keep a vector index
    re-embed their corpus when this falls. The champion's probe embeddings are stored with
    the champion and reused, like its scores.
    """
    texts = probe_texts(eval_sets, size)
    if not texts:
        return {}
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    cache = (
        registry.version_dir(champion_version)
        / "probes"
        / f"{digest}-L{max_seq_length or 'model'}.npy"
    )
    if cache.is_file():
        champion = np.load(cache, allow_pickle=False)
    else:
        champion = encode_probe(
            registry.model_dir(champion_version),
            texts,
            batch_size,
            max_seq_length,
            trust_remote_code,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, champion, allow_pickle=False)
        os.replace(tmp, cache)
    candidate = encode_probe(candidate_dir, texts, batch_size, max_seq_length, trust_remote_code)
    cosines = np.sum(champion * candidate, axis=1)
    return {"mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines))}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    registry_root: str,
    champion_version: int,
    candidate_dir: str,
    eval_sets: list[EvalSet],
    batch_size: int,
    max_seq_length: int | None,
    trust_remote_code: bool = False,
    drift_probe_size: int = 0,
) -> tuple[ModelScores, ModelScores]:
    """Score candidate and champion; the champion's new scores are stored for later runs.

    With ``drift_probe_size``, the candidate's metrics gain the set ``embedding-drift`` with
    ``mean_cosine`` (the champion's is 1.0), which gate checks can name like any other.
    """
    logger = get_run_logger()
    registry = Registry(registry_root)
    champion_dir = registry.model_dir(champion_version)
    stored = stored_scores(registry, champion_version, eval_sets, max_seq_length)
    champion = evaluate_model(
        champion_dir, eval_sets, batch_size, max_seq_length, stored, trust_remote_code
    )
    for es in eval_sets:
        if es.name not in champion.reused and es.name in champion.metrics:
            registry.save_scores(
                champion_version, score_key(es, max_seq_length), es.name, champion.metrics[es.name]
            )
    if champion.reused:
        logger.info(
            "Champion v%d: reused stored scores for %s",
            champion_version,
            ", ".join(champion.reused),
        )
    candidate = evaluate_model(
        candidate_dir, eval_sets, batch_size, max_seq_length, None, trust_remote_code
    )
    for es in eval_sets:
        cand = candidate.metrics.get(es.name, {})
        champ = champion.metrics.get(es.name, {})
        logger.info(
            "%s: %s",
            es.name,
            ", ".join(
                f"{m} {cand.get(m, float('nan')):.4f} (champion {champ.get(m, float('nan')):.4f})"
                for m in cand
            ),
        )
    if drift_probe_size:
        drift = embedding_drift(
            registry,
            champion_version,
            candidate_dir,
            eval_sets,
            drift_probe_size,
            batch_size,
            max_seq_length,
            trust_remote_code,
        )
        if drift:
            candidate.metrics[DRIFT] = drift
            champion.metrics[DRIFT] = {"mean_cosine": 1.0, "min_cosine": 1.0}
            logger.info(
                "Embedding drift: mean cosine %.4f between champion and candidate on at most "
                "%d probe texts%s",
                drift["mean_cosine"],
                drift_probe_size,
                "; below 0.95, re-embed a stored vector index after promotion"
                if drift["mean_cosine"] < 0.95
                else "",
            )
    return candidate, champion
