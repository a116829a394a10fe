"""The Ray executor against the local one, on a local Ray instance with 2 CPUs.

Skipped when Ray is not installed (``pip install 'pyronas[ray]'``; ``make venv`` installs it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pyronas.jobs import (
    Job,
    LocalExecutor,
    RayExecutor,
    make_executor,
    read_json,
    retrain_job,
    run_jobs,
    search_job,
)

ray = pytest.importorskip("ray")

TINY_SEARCH = {"dataset": "digits", "train_size": 200, "channels": 4, "layers": 3,
               "batch_size": 50, "t_max": 1, "search_epochs": 1, "curvature_batches": 1,
               "bn_batches": 1, "posterior_draws": 2, "num_candidates": 2, "num_threads": 1,
               "device": "cpu"}  # fmt: skip
TINY_RETRAIN = {"train_size": 100, "C": 4, "layers": 3, "epochs": 1, "dataset": "digits",
                "num_threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _jobs(root: Path) -> list[Job]:
    jobs = [Job(f"search{seed}", search_job,
                {"overrides": {**TINY_SEARCH, "seed": seed, "out": str(root / f"s{seed}")}})
            for seed in (0, 1)]
    jobs.append(Job("retrain", retrain_job, {"genotype": "DARTS_V2", "preset": "retrain_digits",
                                             "overrides": TINY_RETRAIN,
                                             "out": str(root / "r")}))
    return jobs


def _outcome(results: dict, root: Path) -> dict:
    out = {}
    for label, value in results.items():
        if label.startswith("search"):
            assert Path(value).parent.parent == root
            out[label] = Path(value).read_text()  # the genotype found
        else:
            out[label] = {k: v for k, v in value.items()
                          if "time" not in k and "seconds" not in k}
    return out


def test_ray_tasks_give_the_local_executor_results_and_resume_idempotently(tmp_path, local_ray,
                                                                          caplog):
    local = run_jobs(_jobs(tmp_path / "local"), executor=LocalExecutor())
    executor = RayExecutor(cpus_per_job=1)
    assert executor.max_in_flight == 2  # the local instance's 2 CPUs, one per task
    remote = run_jobs(_jobs(tmp_path / "ray"), executor=executor)
    assert set(remote) == set(local) == {"search0", "search1", "retrain"}
    assert _outcome(remote, tmp_path / "ray") == _outcome(local, tmp_path / "local")

    # rerunning skips every finished job: nothing is rewritten
    genotype = tmp_path / "ray" / "s0" / "genotype.json"
    stamp = genotype.stat().st_mtime_ns
    again = run_jobs(_jobs(tmp_path / "ray"), executor=executor)
    assert _outcome(again, tmp_path / "ray") == _outcome(remote, tmp_path / "ray")
    assert genotype.stat().st_mtime_ns == stamp

    # a failing task is logged with its label and left out, as locally
    with caplog.at_level(logging.ERROR):
        broken = run_jobs([Job("broken", read_json, {"path": tmp_path})], executor=executor)
    assert broken == {} and "job broken failed" in caplog.text


def test_make_executor_names_and_bad_resources(local_ray):
    assert isinstance(make_executor("local", workers=2), LocalExecutor)
    assert isinstance(make_executor("ray"), RayExecutor)
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="cpus_per_job"):
        RayExecutor(cpus_per_job=0)
