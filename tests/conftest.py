"""Shared pytest fixtures (keep generic: other test files rely on them)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same random state (torch, numpy, random)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_process_group_left():
    """A test that ran Lightning's DDP in this process (e.g. a docs command with
    ``strategy: ddp`` on one device) leaves its default process group behind; later tests
    that fork gloo workers would inherit it. Destroy it after every test."""
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (tiny models: threads only add overhead and
    oversubscribe shared CI cores); restores the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the embedded synthetic data of the test session out of the user's cache."""
    import os

    previous = os.environ.get("LIT_SSL_CACHE")
    os.environ["LIT_SSL_CACHE"] = str(tmp_path_factory.mktemp("lit_ssl_cache"))
    yield
    if previous is None:
        os.environ.pop("LIT_SSL_CACHE", None)
    else:
        os.environ["LIT_SSL_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_factory_data(tmp_path_factory):
    """A small synthetic MVTec-style dataset (32 px) shared by CLI, recipe and docs tests."""
    from lit_ssl.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_factory") / "line3"
    return write_synthetic_dataset(
        root, image_size=32, n_train=32, n_test_good=12, n_per_defect=6, nuisance=0.5, seed=0
    )


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory) -> tuple[Path, Path]:
    """(work folder, last.ckpt) of a tiny ``lit-ssl fit`` of recipes/finetune.yaml."""
    from cli_runs import FIT, RECIPE, SIZE, run_lit_ssl, write_class_folders

    work = tmp_path_factory.mktemp("finetune")
    write_class_folders(work / "labelled")
    run_lit_ssl(["fit", "--config", str(RECIPE), "--data.root", "labelled", *SIZE, *FIT], work)
    checkpoint = work / "runs" / "finetune" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return work, checkpoint


# Tests that share an expensive session fixture run in one pytest-xdist worker (a session
# fixture is built once per worker): the journeys, and the two files of the shared fine-tune.
# Every other test is scheduled on its own. (xdist's own ``xdist_group`` marks rename node
# ids, which pytest >= 9.2 ignores, so the grouping is done by the scheduler here.)
_GROUPS = {
    "tests/journeys/": "journeys",
    "tests/test_predict.py": "finetuned",
    "tests/test_export_classifier.py": "finetuned",
}


def _scope(nodeid: str) -> str:
    return next((group for prefix, group in _GROUPS.items() if nodeid.startswith(prefix)), nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (pyproject.toml) with the groups above."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return GroupScheduling(config, log)
