"""Orchestration overhead of a whole run, and the reuse of the champion's stored scores.

The README's main job, second delivery: the STS-B champion (bench/quality.py builds it once)
is retrained on SciFact train and evaluated on STS-B test and SciFact test, through
`refit retrain` on the embedded default (Prefect's temporary server, the local registry).

    run 1   the first run against this champion: the champion has no stored scores (they are
            removed from the copy of its registry), so both models are evaluated
    run 2   the same config again: the gate of run 1 asks for the impossible, so the champion is
            unchanged, and its scores and probe embeddings stored by run 1 are reused; only the
            candidate is evaluated (its training runs again, as every run's does)

Overhead is run 1's wall time (process start to exit) minus the fine-tune and evaluate steps,
split into the interpreter start, the imports (refit's CLI, config and flow with all they
import, Prefect included, measured alone), Prefect's start-up and shutdown (a process that runs
one empty flow, less its interpreter start and `import prefect`), refit's own steps (fetch
checkpoint, validate data, sample replay, register) and the remainder (task bookkeeping,
report, artifacts). Figures go to stdout and bench/results/pipeline.json.

    python bench/pipeline.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the champion and data sets of the quality study)
from machine import describe  # noqa: E402

ROOT = quality.ROOT
RESULTS = quality.RESULTS
WORK = ROOT / ".refit" / "bench" / "pipeline"
ENV = {
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_HOME": str(WORK / "prefect"),
}
# What `refit retrain` imports before its flow starts: the CLI, then the config and the flow
# (Prefect, pyarrow, pandas and every task module).
IMPORTS = (
    "import time; t = time.perf_counter(); "
    "import refit.cli, refit.config, refit.flows.retrain; print(time.perf_counter() - t)"
)
PREFECT = """
import time
t = time.perf_counter()
from prefect import flow

imported = time.perf_counter() - t

@flow(name="noop")
def noop():
    return 1

t = time.perf_counter()
noop()
print(imported, time.perf_counter() - t)
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | ENV, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def median_of(cmd: list[str], parse, repeats: int = 3) -> list[float]:
    rows = [parse(timed(cmd)) for _ in range(repeats)]
    return [statistics.median(col) for col in zip(*rows, strict=True)]


def retrain(config: Path, registry: Path, log: Path) -> tuple[float, dict]:
    cmd = [str(Path(sys.executable).with_name("refit")), "retrain", "--config", str(config)]
    cmd += ["--registry", str(registry), "--json"]
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env=os.environ | ENV, check=False
        )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"refit retrain failed ({proc.returncode}); see {log}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    machine = describe("torch", "transformers", "sentence_transformers", "prefect")
    base = quality.champion_registry(ROOT / ".refit" / "bench" / "quality")
    registry = WORK / "registry"
    shutil.rmtree(registry, ignore_errors=True)
    shutil.copytree(base, registry)
    for sub in ("scores", "probes"):
        shutil.rmtree(registry / "versions" / "2" / sub, ignore_errors=True)
    config = WORK / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "new_data": [quality.SCIFACT],
                "eval_data": [quality.STSB_TEST, quality.SCIFACT_TEST],
                "training": dict(quality.TRAINING) | {"seed": 42},
                "replay": {"seed": 42},
                "gate": [{"eval_set": "scifact-test", "min_gain": 1.0}],
            },
            sort_keys=False,
        )
    )

    python = [sys.executable, "-c"]
    (interpreter,) = median_of([*python, "pass"], lambda r: (r[0],))
    (imports,) = median_of([*python, IMPORTS], lambda r: (float(r[1].split()[-1]),))
    # Prefect's start-up and shutdown: the whole empty-flow process (its temporary server
    # starts for the first flow run and stops at exit) less the interpreter and `import prefect`,
    # which the refit imports above already count.
    prefect_process, prefect_import = median_of(
        [*python, PREFECT], lambda r: (r[0], float(r[1].split()[-2]))
    )
    prefect_start = prefect_process - interpreter - prefect_import
    print(
        f"interpreter {interpreter:.2f} s, refit's imports {imports:.2f} s, "
        f"Prefect start-up and shutdown {prefect_start:.2f} s",
        flush=True,
    )

    runs = []
    for i in (1, 2):
        wall, summary = retrain(config, registry, WORK / f"run{i}.log")
        t = summary["timings"]
        print(
            f"run {i}: {wall:.1f} s wall; "
            + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
            + f"; champion scores reused: {summary.get('champion_scores_reused')}",
            flush=True,
        )
        runs.append({"wall_seconds": round(wall, 2), "summary": summary})

    first, second = runs[0]["summary"], runs[1]["summary"]
    t = first["timings"]
    wall = runs[0]["wall_seconds"]
    own_steps = {k: t[k] for k in t if k not in ("fine-tune", "evaluate")}
    outside_training = wall - t["fine-tune"] - t["evaluate"]
    remainder = outside_training - interpreter - imports - prefect_start - sum(own_steps.values())
    refit_own = sum(own_steps.values()) + remainder
    result = {
        "run1": {
            "wall_seconds": wall,
            "timings": t,
            "training": first["training"],
        },
        "overhead": {
            "outside_training_and_evaluation_s": round(outside_training, 2),
            "interpreter_start_s": round(interpreter, 2),
            "imports_s": round(imports, 2),
            "prefect_startup_s": round(prefect_start, 2),
            "refit_steps_s": {k: round(v, 2) for k, v in own_steps.items()},
            "remainder_s": round(remainder, 2),
            "refit_own_s": round(refit_own, 2),
        },
        "eval_reuse": {
            "first_evaluate_s": t["evaluate"],
            "second_evaluate_s": second["timings"]["evaluate"],
            "ratio": round(second["timings"]["evaluate"] / t["evaluate"], 3),
            "first_reused": first.get("champion_scores_reused"),
            "second_reused": second.get("champion_scores_reused"),
            "second_wall_seconds": runs[1]["wall_seconds"],
            "second_timings": second["timings"],
        },
        "machine": machine,
        "command": "python bench/pipeline.py",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("overhead", "eval_reuse")}, indent=2))


if __name__ == "__main__":
    main()
