"""The run report: a markdown artifact per run and a metric-history table per model.

The markdown shows what the run used (rows of new, replay and evaluation data), what validation
found, candidate against champion on every metric, each gate check, the decision and where the
model is. The table artifact's key is fixed per model, so the Prefect UI lists its versions
across runs as the metric history.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from refit.registry import Registry


def artifact_key(model: str, kind: str) -> str:
    """The artifact key of one model (its slug, see Registry.model_name) and kind."""
    return f"refit-{model}-{kind}"


def _f(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


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
