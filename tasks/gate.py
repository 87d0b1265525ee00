"""The promotion gate: a list of checks, each on one metric of one evaluation set.

A check has a floor (``min``) and/or a change against the champion: ``max_drop`` (the candidate
may fall at most this much below the champion) or ``min_gain`` (it must rise at least this much).
Every check must pass. A metric that is missing fails its check. An explicitly empty gate
promotes nothing. The default gate: no primary metric of any evaluation set drops by more than
0.01. All refit metrics are higher-is-better.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from refit.config import GateCheck
from refit.records import CheckResult, EvalSet, GateResult


def expand_checks(checks: tuple[GateCheck, ...] | list[GateCheck], eval_sets: list[EvalSet]):
    """Resolve ``eval_set: "*"`` to every set and ``metric: primary`` to the set's primary."""
    by_name = {es.name: es for es in eval_sets}
    for check in checks:
        names = list(by_name) if check.eval_set == "*" else [check.eval_set]
        for name in names:
            es = by_name.get(name)
            metric = es.primary_metric if (es and check.metric == "primary") else check.metric
            yield name, metric, check


def _hold(reason: str) -> GateResult:
    """A decision not to promote that no single check made (no checks, or none applicable)."""
    check = CheckResult(
        eval_set="*",
        metric="*",
        rule="empty",
        threshold=None,
        candidate=None,
        champion=None,
        delta=None,
        passed=False,
        reason=reason,
    )
    return GateResult(decision="rejected", checks=[check], reasons=[reason])


def apply_gate(
    checks: tuple[GateCheck, ...] | list[GateCheck],
    eval_sets: list[EvalSet],
    candidate: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]],
) -> GateResult:
    results: list[CheckResult] = []
    if not checks:
        return _hold("the gate has no checks, so nothing is promoted (an empty gate is a hold)")

    known = {es.name for es in eval_sets} | set(candidate)
    for name, metric, check in expand_checks(checks, eval_sets):
        cand = candidate.get(name, {}).get(metric)
        champ = champion.get(name, {}).get(metric)
        delta = cand - champ if cand is not None and champ is not None else None
        rules = []
        if check.min is not None:
            rules.append(("min", check.min))
        if check.max_drop is not None:
            rules.append(("max_drop", check.max_drop))
        if check.min_gain is not None:
            rules.append(("min_gain", check.min_gain))
        for rule, threshold in rules:
            label = f"{name}/{metric}"
            if name not in known:
                passed, reason = (
                    False,
                    (
                        f"{label}: no evaluation set named '{name}' in this run "
                        f"(sets: {', '.join(sorted(known)) or 'none'})"
                    ),
                )
            elif cand is None:
                passed, reason = False, f"{label}: the candidate has no metric '{metric}'"
            elif rule == "min":
                passed = cand >= threshold
                reason = f"{label} = {cand:.4f} {'>=' if passed else '<'} floor {threshold:g}"
            elif champ is None:
                passed, reason = False, f"{label}: the champion has no metric '{metric}'"
            elif rule == "max_drop":
                passed = delta >= -threshold
                reason = (
                    f"{label} changed {delta:+.4f} ({champ:.4f} -> {cand:.4f}); "
                    f"allowed drop {threshold:g}"
                )
            else:
                passed = delta >= threshold
                reason = (
                    f"{label} changed {delta:+.4f} ({champ:.4f} -> {cand:.4f}); "
                    f"required gain {threshold:g}"
                )
            results.append(
                CheckResult(
                    eval_set=name,
                    metric=metric,
                    rule=rule,
                    threshold=threshold,
                    candidate=cand,
                    champion=champ,
                    delta=delta,
                    passed=passed,
                    reason=reason,
                )
            )
    if not results:
        return _hold(
            "no gate check applies: the run has no evaluation set to compare candidate and "
            "champion on, so nothing is promoted"
        )
    failed = [r.reason for r in results if not r.passed]
    return GateResult(
        decision="rejected" if failed else "promoted",
        checks=results,
        reasons=failed or ["every gate check passed"],
    )


def check_gate_names(
    checks: tuple[GateCheck, ...] | list[GateCheck], eval_sets: list[EvalSet], metrics: dict
) -> None:
    """Refuse, before any training, a gate check that names a set or metric this run lacks."""
    from refit.errors import ConfigError

    by_name = {es.name: es for es in eval_sets}
    extra = {"embedding-drift": ("mean_cosine", "min_cosine")}
    for check in checks:
        if check.eval_set == "*":
            continue
        if check.eval_set not in by_name and check.eval_set not in extra:
            raise ConfigError(
                f"the gate names the evaluation set '{check.eval_set}', which this run does "
                f"not have (it has: {', '.join(sorted([*by_name, *extra]))})",
                fix="correct gate[].eval_set, or use '*' for every set",
            )
        es = by_name.get(check.eval_set)
        allowed = extra.get(check.eval_set) or tuple(metrics[es.kind])
        if check.metric != "primary" and check.metric not in allowed:
            raise ConfigError(
                f"the gate names the metric '{check.metric}' of '{check.eval_set}', which "
                f"refit does not compute for it (it computes: {', '.join(allowed)})",
                fix="correct gate[].metric, or use 'primary'",
            )


@task(name="gate", cache_policy=NO_CACHE)
def gate_task(
    checks: list[GateCheck],
    eval_sets: list[EvalSet],
    candidate: dict[str, dict[str, float]],
    champion: dict[str, dict[str, float]],
) -> GateResult:
    return apply_gate(checks, eval_sets, candidate, champion)
