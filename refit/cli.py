"""The ``refit`` command: retrain, list versions, roll back.

Flags override the config file. ``--json`` makes the last line of standard output one JSON
object, for scripts and schedulers; logs go to standard error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from refit.errors import RefitError, RegistryError

app = typer.Typer(
    name="refit",
    help="Keep a Sentence Transformers model current: retrain on new data with replay, "
    "evaluate against the champion on old and new data, promote only if every metric holds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 2

RegistryOption = Annotated[
    Path,
    typer.Option("--registry", help="Registry directory (one model's lineage)."),
]


def _quiet_environment() -> None:
    """Offline defaults: no hub downloads, no telemetry attempts that would only fail."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The first start of Prefect's temporary server migrates its database: allow it the time.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _fail(exc: Exception, as_json: bool) -> None:
    message = str(exc)
    if as_json:
        payload: dict[str, Any] = {"error": message, "kind": type(exc).__name__}
        if isinstance(exc, RefitError):
            payload.update(file=exc.file, rows=exc.rows, column=exc.column, fix=exc.fix)
        print(json.dumps(payload))
    typer.secho(f"refit: error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(EXIT_ERROR)


@app.command()
def retrain(
    model: Annotated[
        str | None,
        typer.Option(help="First run: the model to register as version 1 (directory or id)."),
    ] = None,
    new_data: Annotated[
        list[str] | None,
        typer.Option("--new-data", help="New training data: file, directory, glob or URL."),
    ] = None,
    original_data: Annotated[
        list[str] | None,
        typer.Option("--original-data", help="Data the model was trained on (replay pool)."),
    ] = None,
    eval_data: Annotated[
        list[str] | None,
        typer.Option("--eval-data", help="An evaluation set for the new data (pairs file)."),
    ] = None,
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry directory.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML configuration file.")
    ] = None,
    from_version: Annotated[
        int | None,
        typer.Option("--from-version", help="Start from this version."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain the champion on new data; promote the candidate if the gate passes."""
    _quiet_environment()
    from refit.config import load_config

    try:
        cfg = load_config(
            config,
            {
                "model": model,
                "new_data": new_data,
                "original_data": original_data,
                "eval_data": eval_data,
                "registry": str(registry) if registry else None,
                "from_version": from_version,
            },
        )
        from refit.flows.retrain import retrain as retrain_flow

        summary = retrain_flow(cfg)
    except RefitError as exc:
        _fail(exc, as_json)
        return
    except Exception as exc:
        # Not a problem refit knows how to explain: keep the traceback for the bug report.
        import traceback

        traceback.print_exc()
        _fail(exc, as_json)
        return
    if as_json:
        print(json.dumps(summary, default=str))
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    decision = summary["decision"]
    if "metrics" not in summary:
        typer.echo(
            f"{decision}: version {summary['version']} is the champion ({summary['model_path']})"
        )
        return
    typer.echo(f"Decision: {decision.upper()} — version {summary['version']}")
    typer.echo(f"Champion: version {summary['champion']}")
    typer.echo(f"Model:    {summary['model_path']}")
    typer.echo("")
    typer.echo(
        f"{'evaluation set':<28} {'metric':<10} {'candidate':>9} {'champion':>9} {'delta':>8}"
    )
    for name, values in summary["metrics"]["candidate"].items():
        for metric, value in values.items():
            champ = summary["metrics"]["champion"].get(name, {}).get(metric)
            delta = "" if champ is None else f"{value - champ:+.4f}"
            champ_s = "" if champ is None else f"{champ:.4f}"
            typer.echo(f"{name:<28} {metric:<10} {value:>9.4f} {champ_s:>9} {delta:>8}")
    typer.echo("")
    for check in summary["gate"]:
        mark = "pass" if check["passed"] else "FAIL"
        typer.echo(f"  [{mark}] {check['reason']}")


@app.command()
def models(
    registry: RegistryOption = Path("./.refit/registry"),
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the registry's versions with their status and name the champion."""
    from refit.registry import Registry

    reg = Registry(registry)
    try:
        meta = reg.meta()
        champion = reg.champion()
        versions = reg.versions()
    except RefitError as exc:
        _fail(exc, as_json)
        return
    rows = [
        {
            "version": v.version,
            "status": v.status,
            "champion": v.version == champion,
            "parent": v.parent,
            "created_at": v.created_at,
            "metrics": v.metrics,
            "primary": {es.name: es.primary_metric for es in v.eval_sets},
            "reasons": v.reasons,
            "path": str(reg.model_dir(v.version)),
        }
        for v in versions
    ]
    if as_json:
        print(json.dumps({"model": meta["model"], "champion": champion, "versions": rows}))
        return
    typer.echo(f"Registry {reg.root} — model {meta['model']}")
    for row in rows:
        star = "*" if row["champion"] else " "
        primary = "; ".join(
            f"{name} {metric} {row['metrics'].get(name, {}).get(metric, float('nan')):.4f}"
            for name, metric in row["primary"].items()
            if name in row["metrics"]
        )
        parent = row["parent"] or "-"
        typer.echo(f"{star} v{row['version']:<3} {row['status']:<10} parent {parent:<4} {primary}")
    typer.echo(f"champion: version {champion}")


@app.command()
def rollback(
    registry: RegistryOption = Path("./.refit/registry"),
    to: Annotated[
        int | None,
        typer.Option("--to", help="Version to make champion (default: the champion's parent)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a version that the gate rejected.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Move the champion alias back to an earlier version."""
    from refit.registry import Registry

    reg = Registry(registry)
    try:
        reg.meta()  # a mistyped --registry is an error, not a new folder
        with reg.lock(0):
            current = reg.champion()
            target = to if to is not None else _previous_champion(reg, current)
            record = reg.get(target)
            if record.status == "rejected" and not force:
                raise RegistryError(
                    f"version {target} was rejected by the gate ({'; '.join(record.reasons)})",
                    file=str(reg.root),
                    fix="pass --force to make it champion anyway",
                )
            if target == current:
                raise RegistryError(
                    f"version {target} is already the champion",
                    file=str(reg.root),
                    fix="pass --to with another version (`refit models` lists them)",
                )
            reg.set_champion(target, "rollback", reason=f"champion moved from version {current}")
    except RefitError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        print(json.dumps({"champion": target, "previous": current}))
    else:
        typer.echo(f"Champion moved from version {current} to version {target}")


def _previous_champion(reg, current: int) -> int:
    """The current champion's parent: the model it replaced."""
    parent = reg.get(current).parent
    if parent is None:
        raise RegistryError(
            f"version {current} has no parent to roll back to",
            file=str(reg.root),
            fix="pass --to VERSION (`refit models` lists them)",
        )
    return parent


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", help="YAML configuration file.")],
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry directory.")] = None,
) -> None:
    """Serve the model's deployment: nightly schedule and data-landed trigger, one run at a time."""
    _quiet_environment()
    from refit.config import load_config
    from refit.unattended import build_deployment, check_server, model_slug

    try:
        cfg = load_config(config, {"registry": str(registry) if registry else None})
        url = check_server()
        deployment = build_deployment(cfg, config)
    except RefitError as exc:
        _fail(exc, False)
        return
    typer.secho(
        f"Serving refit-{model_slug(cfg)} at {url}: schedule {cfg.schedule.cron or 'none'} "
        f"({cfg.schedule.timezone}), trigger on refit.data.landed",
        err=True,
    )
    from prefect import serve as prefect_serve

    prefect_serve(deployment)


@app.command()
def watch(
    location: Annotated[
        str | None, typer.Argument(help="Landing directory or fsspec URL (default: config).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML configuration file.")
    ] = None,
    registry: Annotated[Path | None, typer.Option("--registry", help="Registry directory.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Check once, announce, and exit.")] = False,
) -> None:
    """Announce complete new data files in LOCATION, one data-landed event per batch."""
    _quiet_environment()
    import logging

    from refit.config import load_config
    from refit.unattended import Watcher, check_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = load_config(config, {"registry": str(registry) if registry else None})
        if location:
            cfg = cfg.model_copy(
                update={"landing": cfg.landing.model_copy(update={"location": location})}
            )
        check_server()
        watcher = Watcher(cfg)
    except RefitError as exc:
        _fail(exc, False)
        return
    typer.secho(f"Watching {cfg.landing.location} for refit-{watcher.slug}", err=True)
    watcher.run(once=once)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
