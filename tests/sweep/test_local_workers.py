"""Workers that share a machine: the cores split between them, ``smto sweep run --workers N``
on a queue of sweeps (a reference sweep, the multi-task sweep that needs it, and an
independent one): every configuration x seed exactly once, both workers busy, each with its
share of threads (read back from torch in the worker)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sweep_helpers import FAST, states, toy_sweep, trials_by_slot

from smto.errors import ConfigError
from smto.sweep.driver import SweepQueue, WorkerSettings
from smto.sweep.pool import run_with_workers
from smto.sweep.threads import THREAD_VARIABLES, threads_per_worker
from smto.train import load_run

SETTINGS = WorkerSettings(**FAST)


@pytest.mark.parametrize(
    ("workers", "cores", "threads", "expected"),
    [(2, 2, None, 1), (1, 2, None, 2), (2, 16, None, 8), (3, 16, None, 5), (4, 2, None, 1),
     (2, 2, 3, 3)],
)  # fmt: skip
def test_the_cores_are_split_evenly_between_the_workers_unless_overridden(
    workers, cores, threads, expected
):
    assert threads_per_worker(workers, cores=cores, threads=threads) == expected


def test_a_bad_worker_or_thread_count_is_an_error():
    with pytest.raises(ValueError, match="workers"):
        threads_per_worker(0, cores=2)
    with pytest.raises(ValueError, match="threads"):
        threads_per_worker(2, cores=2, threads=0)


def test_use_threads_sets_torch_and_the_childrens_environment():
    code = (
        "import os; from smto.sweep.threads import use_threads; n = use_threads(1); "
        f"print(n, *[os.environ[v] for v in {THREAD_VARIABLES!r}])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1"]


def test_a_queue_puts_each_sweep_after_its_references_and_each_once(tmp_path):
    single = toy_sweep(tmp_path, "single", tasks=["T1", "T2"], methods=["unit_scal"])
    multi = toy_sweep(tmp_path, "multi", reference_sweeps=["single.toml"])
    other = toy_sweep(tmp_path, "other", methods=["cagrad"])
    queue = SweepQueue.load([multi, other, single], None)
    assert queue.names == ["single", "multi", "other"]
    assert queue.needs == {"single": [], "multi": ["single"], "other": []}
    elsewhere = toy_sweep(tmp_path, "elsewhere", root=str(tmp_path / "other-root"))
    with pytest.raises(ConfigError, match="run roots"):
        SweepQueue.load([multi, elsewhere], None)


@pytest.mark.slow
def test_two_local_workers_run_a_queue_of_sweeps_each_run_exactly_once(tmp_path):
    fixed = {"epochs": 2, "batch_size": 32, "problem_options": {"sizes": [256, 64, 64]}}
    toy_sweep(tmp_path, "single", tasks=["T1", "T2"], seeds={"runs": 2}, fixed=fixed)
    multi = toy_sweep(tmp_path, "multi", reference_sweeps=["single.toml"], fixed=fixed)
    other = toy_sweep(tmp_path, "other", methods=["cagrad"], seeds={"runs": 3}, fixed=fixed)
    messages: list[str] = []
    queue = run_with_workers([multi, other], 2, settings=SETTINGS, progress=False,
                             echo=messages.append)  # fmt: skip
    assert queue.finished() and queue.names == ["single", "multi", "other"]
    root = tmp_path / "runs"
    workers, planned = set(), 0
    for name in queue.names:
        study = queue.studies[name]
        trials = trials_by_slot(queue.storage, name)
        assert sorted(trials) == sorted(s.key for s in study.planned())
        for slot in study.planned():
            found = states(trials[slot.key])
            assert found.count("COMPLETE") == 1 and set(found) <= {"COMPLETE", "PRUNED"}, found
            assert load_run(root / slot.key).status == "completed"
        workers |= {t.user_attrs["worker"] for ts in trials.values() for t in ts}
        planned += len(study.planned())
    assert planned == 2 * 2 * 2 + 2 * 2 + 2 * 3  # single: 2 tasks x 2 lr x 2 seeds, ...
    assert len(list(root.glob("toy_regression-*"))) == planned
    assert len(workers) == 2  # both took part
    share = threads_per_worker(2)
    for index in range(2):
        log = (root / "workers" / f"worker-{index}.log").read_text()
        assert re.search(rf"worker \S+: {share} thread\(s\)", log), log
    assert messages[0].startswith(f"2 local worker(s) of {share} thread(s)")
