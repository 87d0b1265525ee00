"""Continual-learning quality: how much a retrain gains on new data and forgets of old data.

The scenario of the README's main job: all-MiniLM-L6-v2 is fine-tuned on STS-B train (the
champion), then SciFact train lands. Each variant retrains that same champion on SciFact through
`refit retrain`, in its own copy of the registry, and records the candidate's SciFact test
nDCG@10 (gain) and STS-B test Spearman (forgetting) against the champion's:

    replay-0, replay-5, replay-20 (refit's default), replay-50   replay.size 0 / .05 / .2 / .5
    distill-20      20 % replay plus distillation from the champion's embeddings of those texts
    joint           the upper reference: all-MiniLM-L6-v2 trained once on STS-B and SciFact
    anything passed with --variant NAME:KEY=VALUE,...  (e.g. e2:training.epochs=2)

Every variant runs with each seed (training and replay seed). Results accumulate in
WORK/results.json, so an interrupted study resumes where it stopped; `--report` writes the table
(bench/results/quality.md), the figures (bench/results/quality.json) and the plot
(bench/results/quality.png).

    python bench/quality.py --seeds 42 43            # run every variant missing from results
    python bench/quality.py --report                 # table and plot from what has run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from machine import describe

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
RESULTS = ROOT / "bench" / "results"
STSB = {"path": str(DATA / "stsb" / "train.csv"), "name": "stsb-train", "score_range": [0, 5]}
STSB_TEST = {"path": str(DATA / "stsb" / "test.csv"), "name": "stsb-test", "score_range": [0, 5]}
SCIFACT = {"path": str(DATA / "scifact" / "train.jsonl"), "name": "scifact-train"}
SCIFACT_TEST = {
    "name": "scifact-test",
    "queries": str(DATA / "scifact" / "test" / "queries.jsonl"),
    "corpus": str(DATA / "scifact" / "test" / "corpus.jsonl"),
    "qrels": str(DATA / "scifact" / "test" / "qrels.tsv"),
}
TRAINING = {"batch_size": 32, "max_seq_length": 128}
# Record the metrics whatever they are: the study reads them, it does not need a promotion.
GATE: list[dict] = []

VARIANTS: dict[str, dict] = {
    "replay-0": {"replay.size": 0},
    "replay-5": {"replay.size": 0.05},
    "replay-20": {"replay.size": 0.2},
    "replay-50": {"replay.size": 0.5},
    "distill-20": {"replay.size": 0.2, "training.distill": 20},
    "joint": {"joint": True},
}


def refit(args: list[str], log: Path) -> dict:
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("refit")), *args, "--json"],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"refit {' '.join(args)} failed ({proc.returncode}); see {log}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def apply(config: dict, overrides: dict) -> dict:
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


def champion_registry(work: Path) -> Path:
    """Run 1, once: all-MiniLM-L6-v2 fine-tuned on STS-B train becomes version 2."""
    base = work / "champion-registry"
    if (base / "versions" / "2" / "version.json").is_file():
        return base
    shutil.rmtree(base, ignore_errors=True)
    config = write_config(
        work / "champion.yaml",
        {
            "model": "all-MiniLM-L6-v2",
            "new_data": [STSB],
            "eval_data": [STSB_TEST],
            "training": dict(TRAINING),
        },
    )
    print("building the champion: all-MiniLM-L6-v2 on STS-B train", flush=True)
    refit(["retrain", "--config", str(config), "--registry", str(base)], work / "champion.log")
    return base


def run_variant(work: Path, name: str, overrides: dict, seed: int) -> dict:
    overrides = dict(overrides)
    joint = overrides.pop("joint", False)
    run_dir = work / "runs" / f"{name}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    registry = run_dir / "registry"
    base = champion_registry(work)
    config: dict = {"training": dict(TRAINING) | {"seed": seed}, "gate": GATE}
    if joint:
        # From the untouched model, on everything at once, with run 1's settings.
        config |= {
            "model": "all-MiniLM-L6-v2",
            "new_data": [STSB, SCIFACT],
            "eval_data": [STSB_TEST, SCIFACT_TEST],
        }
    else:
        shutil.copytree(base, registry)
        config |= {"new_data": [SCIFACT], "eval_data": [SCIFACT_TEST], "replay": {"seed": seed}}
    apply(config, overrides)
    path = write_config(run_dir / "config.yaml", config)
    args = ["retrain", "--config", str(path), "--registry", str(registry)]
    summary = refit(args, run_dir / "log")
    if not joint:
        # Keep the champion's scores and probe embeddings for the next variant to reuse.
        for sub in ("scores", "probes"):
            source = registry / "versions" / "2" / sub
            if source.is_dir():
                shutil.copytree(source, base / "versions" / "2" / sub, dirs_exist_ok=True)
    shutil.rmtree(registry / "versions", ignore_errors=True)  # models are large; keep the rest
    cand, champ = summary["metrics"]["candidate"], summary["metrics"]["champion"]
    return {
        "variant": name,
        "seed": seed,
        "overrides": overrides | ({"joint": True} if joint else {}),
        "champion": {
            "version": summary["parent"],
            "scifact_ndcg10": champ.get("scifact-test", {}).get("ndcg@10"),
            "stsb_spearman": champ.get("stsb-test", {}).get("spearman"),
        },
        "scifact_ndcg10": cand["scifact-test"]["ndcg@10"],
        "stsb_spearman": cand["stsb-test"]["spearman"],
        "drift_mean_cosine": cand.get("embedding-drift", {}).get("mean_cosine"),
        "replay_rows": summary["data"]["replay"],
        "train_steps": summary["training"]["steps"],
        "learning_rate": summary["training"]["learning_rate"],
        "timings": summary["timings"],
        "wall_seconds": round(summary["wall_seconds"], 1),
    }


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    overrides: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        overrides[key] = yaml.safe_load(raw)
    return name, overrides


def study(work: Path, names: list[str], extra: list[str], seeds: list[int]) -> None:
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": {}}
    variants = {n: VARIANTS[n] for n in names} | dict(parse_variant(v) for v in extra)
    for seed in seeds:
        for name, overrides in variants.items():
            key = f"{name}-s{seed}"
            if key in results["runs"]:
                continue
            print(f"{key}: {overrides}", flush=True)
            machine = describe("torch", "transformers", "sentence_transformers")
            started = time.perf_counter()
            row = run_variant(work, name, overrides, seed)
            results["runs"][key] = row
            if "champion" not in results and not row["overrides"].get("joint"):
                results["champion"] = row["champion"]
            results["machine"] = machine
            results_file.write_text(json.dumps(results, indent=2))
            print(
                f"  nDCG@10 {row['scifact_ndcg10']:.4f}  STS-B {row['stsb_spearman']:.4f}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.fmean(values), min(values), max(values)


def versus(stat: tuple[float, float, float], base: tuple[float, float, float]) -> str:
    """The difference of two means, and whether the two ranges over seeds overlap."""
    mean, low, high = stat
    b_mean, b_low, b_high = base
    overlap = low <= b_high and b_low <= high
    return f"{mean - b_mean:+.4f} ({'inside' if overlap else 'beyond'} the spread)"


def report(work: Path) -> None:
    results = json.loads((work / "results.json").read_text())
    champ = results["champion"]
    by_variant: dict[str, list[dict]] = {}
    for row in results["runs"].values():
        by_variant.setdefault(row["variant"], []).append(row)
    table = []
    for name, rows in by_variant.items():
        gain = [r["scifact_ndcg10"] - champ["scifact_ndcg10"] for r in rows]
        drop = [champ["stsb_spearman"] - r["stsb_spearman"] for r in rows]
        # A joint run starts from the untouched model, so its drift is against that model, not
        # against the champion the others move from: not comparable, left out.
        drift = [
            r["drift_mean_cosine"]
            for r in rows
            if r["drift_mean_cosine"] is not None and not r["overrides"].get("joint")
        ]
        table.append(
            {
                "variant": name,
                "seeds": sorted(r["seed"] for r in rows),
                "overrides": rows[0]["overrides"],
                "scifact_ndcg10": spread([r["scifact_ndcg10"] for r in rows]),
                "stsb_spearman": spread([r["stsb_spearman"] for r in rows]),
                "gain": spread(gain),
                "drop": spread(drop),
                "drift": spread(drift) if drift else None,
                "train_seconds": statistics.fmean(r["timings"]["fine-tune"] for r in rows),
                "replay_rows": rows[0]["replay_rows"],
            }
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality-runs.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "quality.json").write_text(
        json.dumps({"champion": champ, "machine": results["machine"], "variants": table}, indent=2)
    )

    def cell(stat: tuple[float, float, float], signed: bool = True) -> str:
        mean, low, high = stat
        fmt = "{:+.4f}" if signed else "{:.4f}"
        return f"{fmt.format(mean)} ({fmt.format(low)} … {fmt.format(high)})"

    lines = [
        f"Champion (all-MiniLM-L6-v2 after STS-B train): SciFact nDCG@10 "
        f"{champ['scifact_ndcg10']:.4f}, STS-B Spearman {champ['stsb_spearman']:.4f}.",
        "",
        "| variant | replay rows | seeds | SciFact nDCG@10 gain | STS-B Spearman drop "
        "| drift (mean cos) | train s |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for row in table:
        drift = cell(row["drift"], signed=False) if row["drift"] else "–"
        lines.append(
            f"| {row['variant']} | {row['replay_rows']} | {', '.join(map(str, row['seeds']))} "
            f"| {cell(row['gain'])} | {cell(row['drop'])} | {drift} "
            f"| {row['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Each cell: mean over seeds (lowest … highest). The champion is built once (seed 42), so "
        "a retrain's spread is that of its own seed; joint's also covers the full training's. "
        "Drift is against the champion, so joint (from the untouched model) has none.",
    ]
    default = next((row for row in table if row["variant"] == "replay-20"), None)
    if default:
        lines += ["", "Each variant against the default (replay-20), difference of means:", ""]
        lines += ["| variant | gain − default | drop − default |", "|---|---|---|"]
        for row in table:
            if row is default:
                continue
            lines.append(
                f"| {row['variant']} | {versus(row['gain'], default['gain'])} "
                f"| {versus(row['drop'], default['drop'])} |"
            )
        lines += [
            "",
            "Beyond: the seeds' ranges of the two variants do not overlap; inside: they do, so "
            "two seeds cannot tell the variants apart.",
        ]
        met = default["gain"][1] >= 0.03 and default["drop"][2] <= 0.005
        lines += [
            "",
            f"Target for the defaults (replay-20): every seed gains at least 0.03 nDCG@10 and "
            f"drops at most 0.005 Spearman: {'met' if met else 'not met'} (lowest gain "
            f"{default['gain'][1]:+.4f}, highest drop {default['drop'][2]:+.4f}).",
        ]
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(table, RESULTS / "quality.png")


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for row in table:
        gain, drop = row["gain"], row["drop"]
        ax.errorbar(
            drop[0],
            gain[0],
            xerr=[[drop[0] - drop[1]], [drop[2] - drop[0]]],
            yerr=[[gain[0] - gain[1]], [gain[2] - gain[0]]],
            fmt="o",
            capsize=3,
        )
        ax.annotate(row["variant"], (drop[0], gain[0]), textcoords="offset points", xytext=(6, 4))
    ax.axhline(0.03, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.005, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("forgetting: STS-B test Spearman drop vs champion (lower is better)")
    ax.set_ylabel("gain: SciFact test nDCG@10 vs champion")
    ax.set_title("Retraining the STS-B champion on SciFact (mean, seed range)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".refit" / "bench" / "quality")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args.work)
    else:
        study(args.work, args.only, args.variant, args.seeds)


if __name__ == "__main__":
    main()
