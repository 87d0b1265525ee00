"""Faults: a crash at any step boundary, a full disk, two runs at once. Nothing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import scifact_pairs, stsb_rows, write_csv, write_jsonl

from refit.config import RefitConfig
from refit.errors import TrainingError
from refit.faults import EXIT_CODE, POINTS
from refit.flows.retrain import retrain
from refit.registry import Registry

pytestmark = pytest.mark.slow

TRAINING = {"batch_size": 16, "max_seq_length": 32, "checkpoint_steps": 4}


@pytest.fixture
def registry(tiny_model, tmp_path) -> Registry:
    """A registry whose champion is the tiny model, registered as version 1."""
    reg = Registry(tmp_path / "reg")
    retrain(RefitConfig(model=str(tiny_model), registry=str(reg.root)))
    assert reg.champion() == 1
    return reg


class Run:
    """A `refit` CLI process in its own process group, with its output in files.

    A crashed CLI leaves Prefect's temporary server behind as an orphan holding the output
    pipes; files and a process-group kill keep the test from waiting on it.
    """

    def __init__(self, tmp: Path, *args: str, env: dict | None = None) -> None:
        self.out, self.err = (tmp / f"{time.monotonic_ns()}.{n}" for n in ("out", "err"))
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "refit.cli", *args],
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def wait(self) -> Run:
        try:
            self.proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.returncode = self.proc.returncode
        self.stdout, self.stderr = self.out.read_text(), self.err.read_text()
        return self


def cli(tmp: Path, *args: str, env: dict | None = None) -> Run:
    return Run(tmp, *args, env=env).wait()


def assert_whole(registry: Registry) -> None:
    """Every listed version is complete and the champion is one of them."""
    numbers = registry.version_numbers()
    assert registry.champion() in numbers
    for n in numbers:
        record = registry.get(n)
        assert (registry.model_dir(n) / "model.safetensors").is_file(), n
        assert record.status in ("registered", "promoted", "rejected")
    assert not [p for p in registry.versions_dir.iterdir() if not p.name.isdigit()]


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_any_step_boundary_leaves_the_old_or_the_new_champion(point, registry, tmp_path):
    data = write_csv(tmp_path / "new.csv", stsb_rows("train", 160))
    args = ["retrain", "--registry", str(registry.root), "--new-data", str(data)]
    config = tmp_path / "c.yaml"
    config.write_text(
        "new_data: [{path: x, score_range: [0, 5]}]\n"
        f"training: {json.dumps(TRAINING)}\n"
        "gate: [{eval_set: '*', metric: primary, max_drop: 1.0}]\n"
    )
    crashed = cli(tmp_path, *args, "--config", str(config), env={"REFIT_CRASH_AT": point})
    assert crashed.returncode == EXIT_CODE, crashed.stderr[-2000:]
    registry.clean_stale()  # what the next run does first, under the lock
    assert registry.champion() in (1, 2)
    assert_whole(registry)
    if point == "while-switching-alias":
        assert registry.version_numbers() == [1, 2] and registry.champion() == 1
    else:
        assert registry.version_numbers() == [1]

    rerun = cli(tmp_path, *args, "--config", str(config), "--json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["decision"] == "promoted"
    assert registry.champion() == summary["version"]
    assert_whole(registry)
    if point == "while-switching-alias":
        # The interrupted promotion was completed before the rerun trained on top of it.
        assert summary["parent"] == 2
        assert "completed after a crash" in registry.promotions()[-2]["reason"]
    if point in ("after-training", "after-evaluation"):
        assert summary["training"]["reused"] is True, "the finished training was not repeated"


def test_a_full_disk_while_saving_the_model(registry, tmp_path):
    runs = registry.root / "runs"
    runs.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(runs)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount ({mounted.stderr.decode().strip()})")
    try:
        data = write_jsonl(tmp_path / "new.jsonl", scifact_pairs(40))
        with pytest.raises(TrainingError) as info:
            retrain(
                RefitConfig(
                    registry=str(registry.root),
                    new_data=[str(data)],
                    training={**TRAINING, "checkpoint_steps": 1000},
                )
            )
        assert "No space left on device" in str(info.value)
        assert "free disk space" in str(info.value)
        assert not list(runs.glob("train-*/model")), "the partial model was removed"
    finally:
        subprocess.run(["umount", str(runs)], check=False)
    assert registry.champion() == 1 and registry.version_numbers() == [1]
    assert_whole(registry)


def test_two_runs_at_the_same_moment_one_is_refused(registry, tmp_path):
    data = write_csv(tmp_path / "new.csv", stsb_rows("train", 120))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"new_data: [{{path: {data}, score_range: [0, 5]}}]\ntraining: {json.dumps(TRAINING)}\n"
    )
    args = ["retrain", "--registry", str(registry.root), "--config", str(config), "--json"]
    runs = [Run(tmp_path, *args), Run(tmp_path, *args)]
    outcomes = [(r.returncode, r.stdout, r.stderr) for r in (run.wait() for run in runs)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], [o[2][-1500:] for o in outcomes]
    refused = next(o for o in outcomes if o[0] == 2)
    assert "another refit run holds this registry" in refused[2]
    assert json.loads(refused[1].strip().splitlines()[-1])["kind"] == "RegistryError"
    assert registry.version_numbers() == [1, 2]
    assert_whole(registry)
