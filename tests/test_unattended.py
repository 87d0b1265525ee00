"""Unattended retraining against a real Prefect server started on 127.0.0.1 for these tests.

Serving registers the schedule and the data-landed trigger; a file dropped into the watched
directory leads to exactly one completed run that trains and promotes; the same content again,
under any name, leads to none; a second trigger during a run waits as a queued run; the report
artifacts can be read back through the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import scifact_pairs, write_jsonl

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A background process in its own group, output in a file, stopped by its PID's group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on a free port of 127.0.0.1 (SQLite), stopped by its PID."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = Process(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        home / "server.log",
    )
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "the Prefect server to answer")
        yield {"url": url, "env": {**env, "PREFECT_API_URL": url}}
    finally:
        proc.stop()


@contextlib.contextmanager
def client(url: str):
    """A Prefect client (and event emitter) of this test process, pointed at ``url``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as api:
        yield api


def refit(*args: str) -> list[str]:
    return [sys.executable, "-m", "refit.cli", *args]


def test_serve_refuses_without_a_server(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"registry: {tmp_path / 'reg'}\n")
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    out = subprocess.run(
        refit("serve", "--config", str(config)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "no Prefect server answers" in out.stderr
    assert "prefect server start" in out.stderr and "never runs schedules" in out.stderr


def test_landed_data_trains_once_and_runs_never_overlap(server, tiny_model, tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.events import emit_event

    landing, registry = tmp_path / "landing", tmp_path / "reg"
    landing.mkdir()
    config = tmp_path / "refit.yaml"
    config.write_text(
        f"registry: {registry}\n"
        "training: {batch_size: 16, max_seq_length: 32}\n"
        "gate: [{eval_set: '*', metric: primary, max_drop: 1.0}]\n"
        f"landing: {{location: {landing}, settle_seconds: 1}}\n"
        "schedule: {cron: '30 3 * * *', timezone: Europe/Berlin}\n"
    )
    env = server["env"]
    registered = subprocess.run(
        refit("retrain", "--model", str(tiny_model), "--config", str(config)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert registered.returncode == 0, registered.stderr[-2000:]
    slug = tiny_model.name.lower()
    serve = Process(refit("serve", "--config", str(config)), env, tmp_path / "serve.log")
    watch = Process(refit("watch", "--config", str(config)), env, tmp_path / "watch.log")
    try:
        with client(server["url"]) as api:
            deployment = wait_for(
                lambda: _deployment(api, f"refit-retrain-landed/refit-{slug}"),
                120,
                "the deployment to be served",
            )
            assert [s.schedule.cron for s in deployment.schedules] == ["30 3 * * *"]
            assert deployment.schedules[0].schedule.timezone == "Europe/Berlin"
            assert deployment.global_concurrency_limit.limit == 1
            assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
            # serve creates the trigger's automation just after the deployment: wait for it too.
            automations = wait_for(
                lambda: api.read_automations_by_name(f"refit-{slug}-data-landed"),
                60,
                "the data-landed automation",
            )
            assert "refit.data.landed" in automations[0].trigger.expect

            # A file lands (written elsewhere, then moved in whole).
            batch = write_jsonl(tmp_path / "incoming.jsonl", scifact_pairs(120))
            shutil.copy(batch, landing / ".part")
            os.replace(landing / ".part", landing / "claims-1.jsonl")
            first = wait_for(lambda: _finished(api, deployment.id, 1), 300, "the first run")
            assert [r.state.name for r in first] == ["Completed"]
            assert first[0].parameters["files"] == [str(landing / "claims-1.jsonl")]
            assert json.loads((registry / "aliases.json").read_text())["champion"] == 2

            # The same content under another name: announced by nobody, trained by nobody.
            shutil.copy(batch, landing / "claims-1-copy.jsonl")
            wait_for(
                lambda: "content was seen before" in watch.output(),
                60,
                "the watcher to skip the copy",
            )
            assert len(_runs(api, deployment.id)) == 1

            # Two batches at once: the second waits as a queued run and never overlaps.
            pairs = scifact_pairs(360)
            files = [
                write_jsonl(tmp_path / f"b{i}.jsonl", pairs[120 + 120 * i : 240 + 120 * i])
                for i in range(2)
            ]
            for f in files:
                emit_event(
                    event="refit.data.landed",
                    resource={"prefect.resource.id": f"refit.landing.{slug}"},
                    payload={"files": [str(f)]},
                )
            queued = wait_for(
                lambda: [
                    r
                    for r in _runs(api, deployment.id)
                    if r.state.name == "AwaitingConcurrencySlot"
                ],
                120,
                "a queued run",
            )
            assert len(queued) == 1
            runs = wait_for(lambda: _finished(api, deployment.id, 3), 420, "both runs")
            assert all(r.state.name == "Completed" for r in runs)
            spans = sorted((r.start_time, r.end_time) for r in runs)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert json.loads((registry / "aliases.json").read_text())["champion"] == 4

            report = api.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"refit-{slug}-report"]))
            )
            assert len(report) == 3 and all("Decision: promoted" in a.data for a in report)
            progress = [a for a in api.read_artifacts() if a.type == "progress"]
            assert progress and all(a.data == 100.0 for a in progress)
    finally:
        watch.stop()
        serve.stop()
    ledger = [json.loads(x) for x in (registry / "ledger.jsonl").read_text().splitlines()]
    assert sum(e["state"] == "promoted" for e in ledger) == 3


def _deployment(api, name):
    try:
        return api.read_deployment_by_name(name)
    except Exception:  # noqa: BLE001 - not there yet
        return None


def _runs(api, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = api.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return [r for r in runs if r.state.name not in ("Scheduled",) or r.parameters.get("files")]


def _finished(api, deployment_id, count):
    runs = [r for r in _runs(api, deployment_id) if r.state.is_final()]
    return runs if len(runs) >= count else None
