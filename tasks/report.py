"""The run report: a markdown artifact per run and a metric-history table per model.

The markdown opens with what the run gained on the new data, what it forgot of the earlier
data and how far it moved the embeddings, then shows what the run used (rows of new, replay and
evaluation data), what validation found, candidate against champion on every metric, each gate
check, the decision, the accuracy of every version of the lineage and where the model is.
The table artifact's key is fixed per model, so the Prefect UI lists its versions
across runs as the metric history.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from refit.records import EvalSet
from refit.registry import Registry
from refit.tasks.evaluate import DRIFT


def artifact_key(model: str, kind: str) -> str:
    """The artifact key of one model (its slug, see Registry.model_name) and kind."""
    return f"refit-{model}-{kind}"


def _f(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def learning_summary(
    eval_sets: list[EvalSet],
    earlier: set[str],
    candidate: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]],
    matrix: dict[str, Any] | None = None,
    candidate_version: int | None = None,
) -> dict[str, Any]:
    """Gain on the new data, forgetting of the earlier data and embedding drift, in one record.

    ``earlier`` holds the keys of the evaluation sets of data the model learned before this run
    (the lineage's sets, or on a first run those of the original data); every other set came
    with this delivery. Each set is judged on its primary metric. An earlier set's
    ``forgetting`` is how far the candidate falls below the champion; ``forgetting_from_best``
    is how far it falls below the best score any version of the lineage ever had on that set
    (continual learning's usual measure), read from the accuracy matrix without its row
    ``candidate_version``, so no old version is evaluated again. Positive values are forgotten,
    negative ones gained.
    """
    best: dict[str, float] = {}
    for row in (matrix or {}).get("rows", []):
        if row["version"] == candidate_version:
            continue
        for name, score in row["scores"].items():
            if score is not None:
                best[name] = max(score, best.get(name, score))
    new, old = [], []
    for es in eval_sets:
        value = candidate.get(es.name, {}).get(es.primary_metric)
        base = champion.get(es.name, {}).get(es.primary_metric)
        row: dict[str, Any] = {
            "eval_set": es.name,
            "metric": es.primary_metric,
            "champion": base,
            "candidate": value,
            "delta": None if value is None or base is None else value - base,
        }
        if es.key in earlier:
            row["forgetting"] = None if row["delta"] is None else -row["delta"]
            top = best.get(es.name)
            row["forgetting_from_best"] = None if value is None or top is None else top - value
            old.append(row)
        else:
            new.append(row)
    gains = [r["delta"] for r in new if r["delta"] is not None]
    drops = [r["forgetting"] for r in old if r["forgetting"] is not None]
    drift = candidate.get(DRIFT)
    return {
        "new": new,
        "earlier": old,
        "mean_gain": sum(gains) / len(gains) if gains else None,
        "max_forgetting": max(drops) if drops else None,
        "drift": dict(drift) if drift else None,
    }


def _learning_lines(learning: dict[str, Any]) -> list[str]:
    lines = [
        "## Gain, forgetting and drift",
        "",
        "| data | evaluation set | metric | champion | candidate | change |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in (("new", learning["new"]), ("earlier", learning["earlier"])):
        for r in rows:
            lines.append(
                f"| {label} | {r['eval_set']} | {r['metric']} | {_f(r['champion'])} "
                f"| {_f(r['candidate'])} | {_f(r['delta'], True)} |"
            )
    lines.append("")
    if learning["mean_gain"] is not None:
        lines.append(f"- Gain on the new data (mean change): **{_f(learning['mean_gain'], True)}**")
    worst = learning["max_forgetting"]
    if worst is None:
        lines.append("- Forgetting: not measured, no evaluation set comes from an earlier delivery")
    elif worst > 0:
        lines.append(f"- Forgetting (largest drop on an earlier set): **{_f(worst)}**")
    else:
        least = _f(-worst, True)
        lines.append(f"- Forgetting: none, every earlier set held or rose (least {least})")
    from_best = [
        r["forgetting_from_best"]
        for r in learning["earlier"]
        if r.get("forgetting_from_best") is not None
    ]
    if from_best:
        gap = max(from_best)
        lines.append(
            "- Against the best score any earlier version had on each earlier set: "
            + (f"at most **{_f(gap)}** below" if gap > 0 else "at or above it on every set")
        )
    drift = learning["drift"]
    if drift:
        lines.append(
            f"- Embedding drift: mean cosine **{_f(drift['mean_cosine'])}** (lowest "
            f"{_f(drift['min_cosine'])}) between the champion's and the candidate's embeddings "
            "of the same probe texts. Below 1, vectors indexed with the champion no longer match "
            "the candidate's: re-embed the corpus when this candidate is promoted"
        )
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    decision = summary["decision"]
    lines = [
        f"# refit: {decision.upper()} — version {summary['version']}",
        "",
        f"Champion is now **version {summary['champion']}**; the candidate is version "
        f"{summary['version']} (parent {summary['parent']}), status `{decision}`.",
        "",
        f"Model directory: `{summary['model_path']}`  ",
        f"Registry: `{summary['registry']}`",
        "",
    ]
    if summary.get("learning"):
        lines += _learning_lines(summary["learning"]) + [""]
    lines += [
        "## Data",
        "",
        "| data | rows |",
        "|---|---|",
    ]
    data = summary["data"]
    lines.append(f"| new | {data['new']} |")
    lines.append(f"| replay | {data['replay']} |")
    for name, rows in data["eval"].items():
        lines.append(f"| evaluation: {name} | {rows} |")
    findings = summary.get("findings", [])
    lines += ["", "## Validation findings", ""]
    lines += [f"- **{f['level']}** ({f['data']}): {f['message']}" for f in findings] or [
        "- nothing to report"
    ]
    weak = [s for s in summary.get("eval_sets", []) if s.get("weak")]
    for s in weak:
        lines.append(f"- **note**: {s['name']} is {s['origin']}")
    lines += [
        "",
        "## Candidate against champion",
        "",
        "| evaluation set | metric | candidate | champion | delta |",
        "|---|---|---|---|---|",
    ]
    metrics = summary["metrics"]
    for name, values in metrics["candidate"].items():
        for metric, value in values.items():
            champ = metrics["champion"].get(name, {}).get(metric)
            delta = None if champ is None else value - champ
            lines.append(f"| {name} | {metric} | {_f(value)} | {_f(champ)} | {_f(delta, True)} |")
    reused = summary.get("champion_scores_reused") or []
    if reused:
        lines.append("")
        lines.append(f"Champion scores reused from the registry for: {', '.join(reused)}.")
    lines += [
        "",
        "## Gate",
        "",
        "| check | rule | threshold | value | result |",
        "|---|---|---|---|---|",
    ]
    for c in summary["gate"]:
        value = c["delta"] if c["rule"] in ("max_drop", "min_gain") else c["candidate"]
        lines.append(
            f"| {c['eval_set']}/{c['metric']} | {c['rule']} | {c['threshold']} | "
            f"{_f(value, c['rule'] != 'min')} | {'pass' if c['passed'] else '**fail**'} |"
        )
    lines += ["", f"**Decision: {decision}.** " + " ".join(summary.get("reasons", []))]
    matrix = summary.get("accuracy_matrix")
    if matrix and matrix["rows"]:
        lines += [
            "",
            "## Accuracy over the lineage",
            "",
            "| version | status | " + " | ".join(matrix["sets"]) + " |",
            "|---|---|" + "---|" * len(matrix["sets"]),
        ]
        for row in matrix["rows"]:
            cells = " | ".join(_f(v) for v in row["scores"].values())
            lines.append(f"| {row['version']} | {row['status']} | {cells} |")
    timings = summary.get("timings") or {}
    if timings:
        lines += ["", "## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def accuracy_matrix(registry: Registry, version: int) -> dict[str, Any]:
    """Each evaluation set's primary metric for each version of the lineage, newest last.

    Built only from scores the registry already holds (a version is scored on a set when it is
    a candidate or a challenged champion), so no old version is evaluated again. A column is an
    evaluation set, a row a version: reading down a column shows what later versions gained or
    forgot on that set.
    """
    chain = list(reversed(registry.lineage(version)))
    sets = registry.lineage_eval_sets(version)
    rows = []
    for v in chain:
        cells: dict[str, float | None] = {}
        for es in sets:
            found = None
            for path in (registry.version_dir(v.version) / "scores").glob(f"{es.key}-*.json"):
                found = json.loads(path.read_text())["metrics"].get(es.primary_metric)
            cells[es.name] = found
        rows.append({"version": v.version, "status": v.status, "scores": cells})
    return {"sets": [f"{es.name} ({es.primary_metric})" for es in sets], "rows": rows}


def history_rows(registry: Registry) -> list[dict[str, Any]]:
    """One row per version and metric: the table the UI shows as the metric history."""
    champion = registry.champion()
    rows = []
    for v in registry.versions():
        for name, values in v.metrics.items():
            for metric, value in values.items():
                rows.append(
                    {
                        "version": v.version,
                        "status": v.status,
                        "champion": v.version == champion,
                        "eval_set": name,
                        "metric": metric,
                        "value": round(value, 6),
                        "parent_value": (
                            None
                            if v.champion_metrics.get(name, {}).get(metric) is None
                            else round(v.champion_metrics[name][metric], 6)
                        ),
                        "created_at": v.created_at,
                    }
                )
    return rows


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report_task(summary: dict[str, Any], registry_root: str) -> str:
    registry = Registry(registry_root)
    model = registry.model_name()
    markdown = render_markdown(summary)
    create_markdown_artifact(
        key=artifact_key(model, "report"),
        markdown=markdown,
        description=f"refit run: {summary['decision']} version {summary['version']}",
    )
    create_table_artifact(
        key=artifact_key(model, "metrics"),
        table=history_rows(registry),
        description=f"Metric history of every version of {model}",
    )
    return markdown
