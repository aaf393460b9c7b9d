"""Launched by torchrun from ``test_distributed.py``: runs a list of training jobs in one process
group and saves every rank's final parameters, so the test can compare ranks.

Usage: torchrun --standalone --nproc_per_node N tests/ddp_worker.py JOBS.json
JOBS.json: a list of {"config": ExperimentConfig dict, "out": run dir, "resume": bool}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from latentgap.config import ExperimentConfig
from latentgap.distributed import init_distributed, process_group_scope
from latentgap.train.run import train


def main(jobs_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    ctx = init_distributed("cpu")
    with process_group_scope():
        for job in jobs:
            config = ExperimentConfig.from_dict(job["config"])
            result = train(config, Path(job["out"]), resume=job.get("resume", False))
            params = {k: v.detach().clone() for k, v in result.model.named_parameters()}
            torch.save(params, Path(job["out"]) / f"params-rank{ctx.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
