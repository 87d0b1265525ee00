#!/usr/bin/env bash
# The main job: two retrains in one registry on real data (STS-B, then SciFact), all offline.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-.refit/main-job}
export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.refit/prefect}
mkdir -p "$PREFECT_HOME"
rm -rf "$REGISTRY"
start=$(date +%s)
echo "== run 1: all-MiniLM-L6-v2 fine-tuned on STS-B train"
refit retrain --config examples/stsb.yaml --registry "$REGISTRY"
echo
echo "== run 2: SciFact train lands; retrain with STS-B replay"
refit retrain --config examples/scifact.yaml --registry "$REGISTRY" --json > "$REGISTRY.run2.json"
python - "$REGISTRY.run2.json" <<'PY'
import json, sys
summary = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"decision: {summary['decision']}  version: {summary['version']}  champion: {summary['champion']}")
for name, values in summary["metrics"]["candidate"].items():
    for metric, value in values.items():
        champ = summary["metrics"]["champion"][name].get(metric)
        print(f"  {name:<14} {metric:<10} candidate {value:.4f}  champion {champ:.4f}  delta {value - champ:+.4f}")
for check in summary["gate"]:
    print(f"  [{'pass' if check['passed'] else 'FAIL'}] {check['reason']}")
PY
echo
refit models --registry "$REGISTRY"
echo "total: $(( $(date +%s) - start )) s"
