"""Shared fixtures: where the real datasets are, and small configs for fast runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    env = os.environ.get("LATENTGAP_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found under {root} (set LATENTGAP_DATA)")
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread for modules of tiny tensors: on a 2-core machine shared with other
    jobs, OpenMP barriers made them several times slower with two threads, and one is no slower
    alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
