"""The deployment as YAML (prefect.yaml) says what the deployment built in code says."""

from __future__ import annotations

from pathlib import Path

import yaml

from refit.config import RefitConfig
from refit.unattended import EVENT, build_deployment

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_matches_the_deployment_refit_serve_builds(tmp_path):
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"][0]
    config = tmp_path / "refit.yaml"
    config.write_text("model: all-MiniLM-L6-v2\n")
    cfg = RefitConfig(model="all-MiniLM-L6-v2", registry=str(tmp_path / "reg"))
    built = build_deployment(cfg, config)

    from prefect.flows import load_flow_from_entrypoint

    assert load_flow_from_entrypoint(spec["entrypoint"]).name == built.flow_name
    assert spec["name"] == built.name == "refit-all-minilm-l6-v2"
    assert spec["schedules"][0]["cron"] == built.schedules[0].schedule.cron == "0 2 * * *"
    assert spec["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert built.concurrency_limit == 1
    assert built.concurrency_options.collision_strategy == "ENQUEUE"
    trigger, built_trigger = spec["triggers"][0], built.triggers[0]
    assert trigger["expect"] == [EVENT] == sorted(built_trigger.expect)
    assert trigger["match"] == {"prefect.resource.id": "refit.landing.all-minilm-l6-v2"}
    assert built_trigger.match.model_dump() == trigger["match"]
    assert trigger["parameters"]["files"] == built_trigger.parameters["files"]
    assert set(spec["parameters"]) == set(built.parameters) == {"config_file", "registry"}
