"""The registry: versions appear whole or not at all, one run at a time, alias moves logged."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
from typer.testing import CliRunner

from refit.cli import app
from refit.errors import RegistryError
from refit.records import ModelVersion
from refit.registry import Registry, now


def add(registry: Registry, status: str = "promoted", parent: int | None = None) -> int:
    staging = registry.staging_dir()
    (staging / "model").mkdir()
    (staging / "model" / "model.safetensors").write_bytes(b"weights")
    record = ModelVersion(version=0, status=status, parent=parent, created_at=now())
    return registry.add_version(staging, record)


@pytest.fixture
def registry(tmp_path) -> Registry:
    reg = Registry(tmp_path / "reg")
    reg.init("tiny", "abc")
    v1 = add(reg, "registered")
    reg.set_champion(v1, "register")
    return reg


def test_versions_are_numbered_and_staging_is_never_listed(registry):
    leftover = registry.staging_dir()  # as a crash mid-assembly would leave it
    (leftover / "model").mkdir()
    assert registry.version_numbers() == [1]
    assert add(registry, parent=1) == 2
    assert registry.version_numbers() == [1, 2]
    registry.clean_stale()
    assert not leftover.exists()


def test_champion_alias_and_append_only_log(registry):
    v2 = add(registry, parent=1)
    registry.set_champion(v2, "promote", reason="gate passed")
    assert registry.champion() == 2
    events = registry.promotions()
    assert [(e["event"], e["version"], e["previous_champion"]) for e in events] == [
        ("register", 1, None),
        ("promote", 2, 1),
    ]


def _hold_lock(root: str, ready, release) -> None:
    with Registry(root).lock():
        ready.set()
        release.wait(10)


def test_a_second_run_is_refused_while_the_registry_is_locked(registry):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(registry.root), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RegistryError) as info, registry.lock(timeout_s=0.2):
            pass
        assert f"pid {holder.pid}" in str(info.value)
        assert "lock_timeout_s" in str(info.value)
    finally:
        release.set()
        holder.join(10)
    started = time.monotonic()
    with registry.lock(timeout_s=5):
        assert time.monotonic() - started < 5


def test_lineage_and_replay_pool_follow_parents(registry):
    from refit.records import DataRecord, SourceFile

    def data(name: str, sha: str) -> DataRecord:
        return DataRecord(
            name=name,
            role="new",
            structure="pairs",
            spec={"path": name},
            files=[SourceFile(uri=name, sha256=sha)],
            rows=1,
        )

    for parent, name in ((1, "a"), (2, "b"), (1, "c")):
        staging = registry.staging_dir()
        record = ModelVersion(
            version=0, status="promoted", parent=parent, created_at=now(), data=[data(name, name)]
        )
        registry.add_version(staging, record)
    assert [v.version for v in registry.lineage(3)] == [3, 2, 1]
    assert [d.name for d in registry.replay_pool(3)] == ["a", "b"]
    assert [d.name for d in registry.replay_pool(4)] == ["c"]


def test_models_json_and_rollback_cli(registry):
    add(registry, parent=1)
    registry.set_champion(2, "promote")
    add(registry, status="rejected", parent=2)
    runner = CliRunner()
    out = runner.invoke(app, ["models", "--registry", str(registry.root), "--json"])
    assert out.exit_code == 0
    listing = json.loads(out.stdout.strip().splitlines()[-1])
    assert listing["champion"] == 2
    assert [(v["version"], v["status"], v["champion"]) for v in listing["versions"]] == [
        (1, "registered", False),
        (2, "promoted", True),
        (3, "rejected", False),
    ]
    refused = runner.invoke(app, ["rollback", "--registry", str(registry.root), "--to", "3"])
    assert refused.exit_code == 2
    assert "was rejected by the gate" in refused.stderr and "--force" in refused.stderr
    back = runner.invoke(app, ["rollback", "--registry", str(registry.root), "--json"])
    assert back.exit_code == 0
    assert json.loads(back.stdout) == {"champion": 1, "previous": 2}
    assert registry.champion() == 1
    assert registry.promotions()[-1]["event"] == "rollback"


def test_empty_registry_says_how_to_start(tmp_path):
    out = CliRunner().invoke(app, ["models", "--registry", str(tmp_path / "none"), "--json"])
    assert out.exit_code == 2
    assert "refit retrain --model" in json.loads(out.stdout)["fix"]
