"""Worker processes for the real-network benchmarks, always bounded in time.

Publisher and subscribers (client and server) run in separate processes, as
they would in production, so that no benchmark measures two programs sharing
one event loop. Processes are started with ``spawn``: a forked child would
inherit the parent's event loop and zmq context, which neither tolerates.
Every wait has a deadline, and whatever is still running when the case is
over is terminated: a benchmark that hangs must not hang the whole run.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.context
import os
import queue
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CTX = mp.get_context("spawn")


class WorkerError(RuntimeError):
    """A worker failed or did not answer in time."""


class Workers:
    """The processes of one benchmark case; a context manager that reaps them."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._processes: list[multiprocessing.context.SpawnProcess] = []

    def queue(self) -> Any:
        return _CTX.Queue()

    def start(self, target: Callable[..., None], *args: Any) -> None:
        process = _CTX.Process(target=target, args=args, daemon=True)
        process.start()
        self._processes.append(process)

    def get(self, source: Any, what: str) -> Any:
        """The next item from ``source``; WorkerError on a dead worker or timeout."""
        deadline = time.monotonic() + self.deadline_s
        while True:
            try:
                return source.get(timeout=0.2)
            except queue.Empty:
                pass
            failed = [
                p.exitcode for p in self._processes if p.exitcode not in (None, 0)
            ]
            if failed or time.monotonic() > deadline:
                raise WorkerError(
                    f"no {what} within {self.deadline_s} s (failed workers' exit "
                    f"codes: {failed})"
                )

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self._processes:
            process.join(timeout=2.0)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)


def start_worker(role: str) -> None:
    """Set up a worker process: chaski's logs quiet, py-spy if asked for.

    When BENCH_PYSPY names a folder, each worker samples itself with py-spy
    and writes ``<folder>/<role>-<pid>.txt`` in collapsed-stack format: the
    way to find the hot paths of one benchmark case.
    """
    # A subscriber that leaves first makes the publisher warn about frames
    # left unacknowledged: expected here, and noise in the benchmark's output.
    logging.getLogger("chaski").setLevel(logging.ERROR)
    # The original Chaski's loggers, for the same reason.
    for name in ("ChaskiNode", "ChaskiNodeEdge", "ChaskiNodeUDP", "ChaskiRemote"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        return
    output = Path(folder) / f"{role}-{os.getpid()}.txt"
    command = ["py-spy", "record", "-r", "500", "-f", "raw", "-o", str(output)]
    subprocess.Popen(
        [*command, "--pid", str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # let py-spy attach before the work starts


def use_uvloop(enabled: bool) -> None:
    """Install uvloop's event loop policy in this worker, if asked to."""
    if enabled:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
