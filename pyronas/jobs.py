"""Many searches and retrainings as idempotent jobs, run by an executor.

A comparison (several cells or strategies, several seeds) is a list of jobs, each writing one run
folder. A job whose result file exists is skipped and one with a checkpoint resumes, so a
comparison that was stopped is finished by running the same command again, whichever executor
ran it. Executors: :class:`LocalExecutor` (the default, embedded: in this process, or
``workers`` processes with one CPU thread each) and :class:`RayExecutor` (one Ray task per job
on a Ray cluster, resources per task; the optional extra ``pyronas[ray]``). ``deadline`` stops
starting new jobs after that many seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyronas.genotype import Genotype

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One unit of work: ``func(**kwargs)``, labelled for logs and reports."""

    label: str
    func: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def count_skips(genotype: Genotype, cell_type: str = "normal") -> int:
    """Number of ``skip_connect`` ops in one cell type of a genotype."""
    return sum(op == "skip_connect" for pairs in getattr(genotype, cell_type) for op, _ in pairs)


def count_ops(genotype: Genotype, cell_type: str = "normal") -> int:
    """Number of ops (``(op, input)`` pairs) in one cell type of a genotype (0 if it has none)."""
    return sum(len(pairs) for pairs in getattr(genotype, cell_type) or ())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when the file does not exist yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def retrain_job(genotype: str, preset: str, overrides: dict[str, Any], out: str) -> dict[str, Any]:
    """Retrain ``genotype`` (name or file) with a preset plus overrides into ``out``.

    Skipped when ``out/metrics.json`` exists (its contents are returned); resumed when
    ``out/checkpoint.pt`` exists.
    """
    from pyronas.config import load_config
    from pyronas.train import retrain

    out_dir = Path(out)
    done = read_json(out_dir / "metrics.json")
    if done is not None:
        return done
    cfg = load_config(preset, {**overrides, "genotype": str(genotype), "progress": False})
    return retrain(cfg, out_dir, resume=(out_dir / "checkpoint.pt").exists())


def search_job(overrides: dict[str, Any]) -> Path:
    """Run one search (any strategy) into ``overrides['out']``; returns its ``genotype.json``.

    ``overrides``: flat or nested settings (:mod:`pyronas.settings`). Skipped when the search
    finished (``metrics.json`` and ``genotype.json`` exist); resumed when its run folder holds a
    ``run.json`` (every strategy checkpoints, and one stopped before its first checkpoint starts
    over); any other files that a search writes are replaced.
    """
    from pyronas.dispatch import run_strategy
    from pyronas.runs import RUN_FILE
    from pyronas.settings import load_search_settings

    settings = load_search_settings(None, overrides)
    if settings.run.out is None:
        raise ValueError("search_job needs a run folder: set out")
    out_dir = Path(settings.run.out)
    genotype_path = out_dir / "genotype.json"
    if genotype_path.exists() and (out_dir / "metrics.json").exists():
        return genotype_path
    resume = (out_dir / RUN_FILE).exists()
    run = dataclasses.replace(settings.run, progress=False, resume=resume, overwrite=not resume)
    run_strategy(dataclasses.replace(settings, run=run), out_dir)
    return genotype_path


def search_then_retrain(search: dict[str, Any], preset: str, retrain: dict[str, Any],
                        out: str) -> dict[str, Any]:
    """The search of :func:`search_job`, then :func:`retrain_job` of the genotype it found."""
    genotype = search_job(search)
    return retrain_job(str(genotype), preset, retrain, out)


def _call(job: Job, num_threads: int | None) -> Any:
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    return job.func(**job.kwargs)


def _run_in_flight(
    jobs: Sequence[Job],
    too_late: Callable[[], bool],
    slots: int,
    submit: Callable[[Job], Any],
    next_done: Callable[[list[Any]], Any],
    result: Callable[[Any], Any],
) -> dict[str, Any]:
    """Keep up to ``slots`` jobs running, submitting in order until ``too_late()``.

    ``submit(job)`` starts a job and returns its handle, ``next_done(handles)`` waits for one of
    them to finish and ``result(handle)`` returns its value or raises its error. A job that
    raised is logged with its label and left out; returns ``label -> result``.
    """
    results: dict[str, Any] = {}
    pending = list(jobs)
    running: dict[Any, Job] = {}
    while pending or running:
        while pending and len(running) < slots and not too_late():
            job = pending.pop(0)
            running[submit(job)] = job
        if pending and too_late():
            for job in pending:
                log.warning("deadline reached; %s not started", job.label)
            pending = []
        if not running:
            break
        finished = next_done(list(running))
        job = running.pop(finished)
        try:
            results[job.label] = result(finished)
        except Exception:
            log.exception("job %s failed", job.label)
    return results


class LocalExecutor:
    """Jobs on this machine: in this process (``workers == 1``) or in ``workers`` processes.

    The default executor: embedded, no server. Each job gets ``num_threads`` torch CPU threads
    (``None``: torch's default).
    """

    def __init__(self, workers: int = 1, num_threads: int | None = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.num_threads = workers, num_threads

    def run(self, jobs: Sequence[Job], too_late: Callable[[], bool]) -> dict[str, Any]:
        """Run ``jobs`` in order, starting none once ``too_late()``; ``label -> result``."""
        results: dict[str, Any] = {}
        if self.workers <= 1:
            for job in jobs:
                if too_late():
                    log.warning("deadline reached; %s not started", job.label)
                    continue
                try:
                    results[job.label] = _call(job, self.num_threads)
                except Exception:
                    log.exception("job %s failed", job.label)
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            return _run_in_flight(
                jobs, too_late, self.workers,
                submit=lambda job: pool.submit(_call, job, self.num_threads),
                next_done=lambda running: next(as_completed(running)),
                result=lambda future: future.result(),
            )  # fmt: skip


class RayExecutor:
    """Jobs as Ray tasks, one task per job, on a Ray cluster or a local Ray instance.

    Parameters
    ----------
    address
        The cluster to join (``ray.init(address=...)``: ``"auto"``, ``"ray://host:10001"``);
        ``None`` joins the instance this process already started, else starts a local one.
    cpus_per_job, gpus_per_job
        Resources Ray reserves for each task (``num_cpus`` / ``num_gpus``); a job runs with
        ``cpus_per_job`` torch threads.
    max_in_flight
        Tasks submitted at once (``None``: as many as the cluster's CPUs hold); later jobs are
        submitted as earlier ones finish, so a deadline stops new ones as with the local
        executor.

    The jobs keep their idempotent resume: every job writes its own run folder, so rerunning
    the same command skips finished jobs and resumes interrupted ones, whichever executor ran
    them. The run folders must be on storage every node sees (a shared file system).
    """

    def __init__(self, address: str | None = None, cpus_per_job: float = 1.0,
                 gpus_per_job: float = 0.0, max_in_flight: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("the ray executor needs Ray: pip install 'pyronas[ray]'") from None
        if cpus_per_job <= 0 or gpus_per_job < 0:
            raise ValueError(f"cpus_per_job must be > 0 and gpus_per_job >= 0, got "
                             f"{cpus_per_job}, {gpus_per_job}")
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        self.cpus_per_job, self.gpus_per_job = cpus_per_job, gpus_per_job
        if max_in_flight is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            max_in_flight = max(1, int(cpus // cpus_per_job))
        self.max_in_flight = max_in_flight

    def run(self, jobs: Sequence[Job], too_late: Callable[[], bool]) -> dict[str, Any]:
        """Run ``jobs`` as Ray tasks, starting none once ``too_late()``; ``label -> result``."""
        ray = self.ray
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                          max_retries=0)(_call)
        threads = max(1, int(self.cpus_per_job))
        return _run_in_flight(
            jobs, too_late, self.max_in_flight,
            submit=lambda job: task.remote(job, threads),
            next_done=lambda running: ray.wait(running, num_returns=1)[0][0],
            result=ray.get,
        )  # fmt: skip


EXECUTORS = ("local", "ray")
"""Names of the executors :func:`make_executor` builds."""


def make_executor(name: str = "local", workers: int = 1, address: str | None = None,
                  cpus_per_job: float = 1.0, gpus_per_job: float = 0.0) -> Any:
    """The executor ``name`` (``local``: :class:`LocalExecutor` with ``workers`` processes;
    ``ray``: :class:`RayExecutor` at ``address``)."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, cpus_per_job, gpus_per_job)
    raise ValueError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")


def run_jobs(
    jobs: Sequence[Job],
    workers: int = 1,
    num_threads: int | None = 1,
    deadline: float | None = None,
    executor: Any = None,
) -> dict[str, Any]:
    """Run jobs and collect their results by label.

    Parameters
    ----------
    jobs
        The jobs, in the order they should start.
    workers
        Processes running jobs at once (1: in this process); for the default executor.
    num_threads
        torch CPU threads per job (``None``: torch's default); for the default executor.
    deadline
        Seconds after which no new job starts (running ones finish); ``None``: no limit.
    executor
        Where the jobs run: anything with ``run(jobs, too_late)`` (:class:`LocalExecutor`,
        :class:`RayExecutor`); ``None``: ``LocalExecutor(workers, num_threads)``.

    Returns
    -------
    dict
        ``label -> result`` for the jobs that finished; a job that raised is logged with its
        label and left out (its run folder keeps what it wrote, so a rerun resumes it).
    """
    start = time.monotonic()

    def too_late() -> bool:
        return deadline is not None and time.monotonic() - start > deadline

    if executor is None:
        executor = LocalExecutor(workers, num_threads)
    return executor.run(jobs, too_late)


def executor_from_args(args: argparse.Namespace) -> Any:
    """The executor the :func:`comparison_parser` options select."""
    return make_executor(args.executor, args.workers, args.address, args.cpus_per_job,
                         args.gpus_per_job)


def write_markdown_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``.

    The section is replaced when the markers exist, else appended; the rest of the file stays.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    path = Path(path)
    body = path.read_text() if path.exists() else "# Results\n"
    block = f"{start}\n{text}\n{end}"
    if start in body and end in body:
        before, rest = body.split(start, 1)
        body = before + block + rest.split(end, 1)[1]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    path.write_text(body)


# Reports of comparisons
# --------------------------------------------------------------------------------------------


def mean_sd_text(values: Sequence[float]) -> str:
    """``"mean +/- sd"`` with two decimals (sd 0 for one value, ``-`` for none)."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +/- {sd:.2f}"


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose where jobs run (:func:`executor_from_args` reads them)."""
    parser.add_argument("--workers", type=int, default=1,
                        help="jobs run at once on this machine (local executor)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local (default: this machine) | ray (a Ray cluster; "
                        "pip install 'pyronas[ray]')")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (auto, ray://host:10001; default: a local "
                        "Ray instance)")
    parser.add_argument("--cpus-per-job", dest="cpus_per_job", type=float, default=1.0,
                        help="CPUs Ray reserves per job (its torch threads)")
    parser.add_argument("--gpus-per-job", dest="gpus_per_job", type=float, default=0.0,
                        help="GPUs Ray reserves per job (fractions share a GPU)")


def comparison_parser(description: str, out: str) -> argparse.ArgumentParser:
    """Options every comparison script shares: data set, seeds, run folder, device, workers,
    deadline, report-only, smoke sizes and the results file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--device", default="cpu", help="cpu (reproducible) | cuda | auto")
    add_executor_options(parser)
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which no new job starts")
    parser.add_argument("--report-only", action="store_true",
                        help="only tabulate the run folders that exist")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds on a CPU")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="write the table into this markdown file between markers")
    return parser


def publish_report(args: argparse.Namespace, rows: Any, text: str, section: str) -> None:
    """Print the table, keep the rows in ``out/summary.json`` and, with ``--results-md``, write
    the table into that file's ``section``."""
    print(text)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    if args.results_md is not None:
        write_markdown_section(args.results_md, section, text)
