"""Local workers: ``smto sweep run --workers N`` runs N ``smto sweep work`` processes on this
machine, on one storage and run root, each with its share of the cores
(:func:`smto.sweep.threads.threads_per_worker`), while this process plans the queue
(:class:`smto.sweep.driver.SweepQueue`) and watches them.

A worker that dies (killed, out of memory) leaves its trial RUNNING with a stopped heartbeat:
planning fails it after the grace period and enqueues it again (a retry), and another worker
resumes the run from its checkpoint (smto.sweep.trials). This process starts a new worker in
the dead one's place, up to :data:`RESTARTS_PER_WORKER` times per worker, then stops with the
dead worker's log. Each worker's output goes to ``<root>/workers/worker-<i>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smto.errors import ConfigError, RunStateError
from smto.sweep.driver import ProgressBar, SweepQueue, WorkerSettings
from smto.sweep.threads import thread_environment, threads_per_worker

RESTARTS_PER_WORKER = 2
STOP_TIMEOUT = 60.0
"""Seconds a worker gets to finish after the queue is done (or to put its trial back in the
queue after Ctrl-C) before it is killed."""
LOG_LINES = 5


def worker_command(
    storage_url: str,
    root: Path,
    names: Sequence[str],
    settings: WorkerSettings,
    threads: int,
) -> list[str]:
    """The ``smto sweep work`` command line of one local worker."""
    command = [sys.executable, "-m", "smto", "sweep", "work", "--storage", storage_url,
               "--root", str(root), "--threads", str(threads),
               "--heartbeat", str(settings.heartbeat), "--grace", str(settings.grace_period),
               "--poll", str(settings.poll)]  # fmt: skip
    for name in names:
        command += ["--sweep", name]
    if settings.data_dir is not None:
        command += ["--data-dir", str(settings.data_dir)]
    if settings.vectorize != 1:
        command += ["--vectorize", str(settings.vectorize or "auto")]
    return command


class LocalWorkers:
    """``count`` worker processes running ``command`` with ``threads`` threads each; a dead
    one is replaced (:meth:`check`)."""

    def __init__(
        self,
        command: list[str],
        count: int,
        threads: int,
        logs: Path,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.command = command
        self.count = count
        self.environment = {**os.environ, **thread_environment(threads)}
        self.logs = logs
        self.echo = echo
        self.processes: list[subprocess.Popen] = []
        self.restarts = 0

    def log(self, index: int) -> Path:
        """The log file of worker ``index``."""
        return self.logs / f"worker-{index}.log"

    def _start(self, index: int) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log(index), "a") as handle:  # the worker keeps its own copy
            return subprocess.Popen(
                self.command, stdout=handle, stderr=subprocess.STDOUT, env=self.environment
            )

    def __enter__(self) -> LocalWorkers:
        self.processes = [self._start(i) for i in range(self.count)]
        return self

    def check(self) -> None:
        """Replaces each worker that exited: the queue is not finished, so it should not
        have; a RunStateError once the workers died too often."""
        for index, process in enumerate(self.processes):
            status = process.poll()
            if status is None:
                continue
            self.restarts += 1
            if self.restarts > RESTARTS_PER_WORKER * self.count:
                raise RunStateError(
                    f"local workers keep exiting (worker {index}: status {status}); the end of "
                    f"its log {self.log(index)}:\n{_tail(self.log(index))}"
                )
            self.echo(f"worker {index} exited with status {status}; starting another")
            self.processes[index] = self._start(index)

    def wait(self, timeout: float = STOP_TIMEOUT) -> None:
        """Waits for the workers to exit on their own (each stops when its sweeps are done)."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))

    def __exit__(self, *exc: object) -> None:
        """Interrupts the workers still running (each puts its trial back in the queue), and
        kills those that do not stop in time."""
        alive = [p for p in self.processes if p.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in alive:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_with_workers(
    paths: Sequence[str | os.PathLike[str]],
    workers: int,
    storage_url: str | None = None,
    root: str | os.PathLike[str] | None = None,
    settings: WorkerSettings | None = None,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SweepQueue:
    """Runs the sweep files ``paths`` (and their reference sweeps) to the end as one queue,
    with ``workers`` local worker processes of ``threads`` threads each (default: the cores
    split evenly); returns the queue. The sweeps must share one run root."""
    settings = settings or WorkerSettings()
    queue = SweepQueue.load(paths, root)
    roots = sorted({s.root for s in queue.sweeps})
    if len(roots) > 1:
        raise ConfigError(
            f"local workers share one run root, and these sweeps (with their references) have "
            f"{len(roots)}: {', '.join(roots)}; give --root"
        )
    run_root = Path(roots[0])
    url = storage_url or queue.default_storage_url()
    queue.storage = settings.open(url)
    queue.advance(settings.grace_period)  # the first sweeps exist before the workers look
    threads = threads_per_worker(workers, threads=threads)
    echo(f"{workers} local worker(s) of {threads} thread(s); logs in {run_root / 'workers'}")
    command = worker_command(url, run_root, queue.names, settings, threads)
    with LocalWorkers(command, workers, threads, run_root / "workers", echo) as pool:
        with ProgressBar(queue.description, progress) as bar:
            while True:
                queue.advance(settings.grace_period)
                bar.show(queue)
                if queue.finished():
                    break
                pool.check()
                time.sleep(settings.poll)
        pool.wait()
    return queue


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-LOG_LINES:])
    except OSError:
        return "(no log)"
