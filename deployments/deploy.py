"""Deploy a model's retrain deployment to a work pool, in code (the counterpart of prefect.yaml).

    python deployments/deploy.py --config refit.yaml --work-pool refit-gpu --image refit:cuda

`refit serve` serves the same deployment from one process instead; use this script where flow
runs should execute on a work pool (Kubernetes, Docker, a process pool on another machine).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from refit.config import load_config
from refit.unattended import build_deployment, check_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--registry", default=None)
    parser.add_argument("--work-pool", required=True)
    parser.add_argument("--image", default=None, help="image for container work pools")
    args = parser.parse_args()

    check_server()
    cfg = load_config(args.config, {"registry": args.registry})
    deployment = build_deployment(cfg, args.config)
    deployment.work_pool_name = args.work_pool
    if args.image:
        deployment.job_variables = {**(deployment.job_variables or {}), "image": args.image}
    deployment_id = deployment.apply()
    print(f"deployed {deployment.flow_name}/{deployment.name} to {args.work_pool}: {deployment_id}")


if __name__ == "__main__":
    main()
