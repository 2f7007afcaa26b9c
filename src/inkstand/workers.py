"""Worker process pools that die with the server.

`worker_pool(n)` is a spawned `ProcessPoolExecutor` (the server has threads, so never
fork) whose workers watch their parent: when the server is killed outright (SIGKILL, an
OOM kill) and they are re-parented, they exit within `WATCH_SECONDS` instead of living on.
A graceful stop shuts the pools down as before.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time

WATCH_SECONDS = 1.0


def worker_pool(processes: int) -> concurrent.futures.ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(
        processes, context, initializer=watch_parent, initargs=(os.getpid(),)
    )


def watch_parent(parent: int) -> None:
    """In a worker: exit once `parent` is no longer this process's parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="inkstand-parent-watch", daemon=True).start()
