"""CPU priority of the collectors' background processes (sampler worker, shipper).

On a host where the proxy shares cores with the model server and its clients, a sampler or
shipper burst (JSON parse, base64 decode, image check, fsync, SQL) that is scheduled ahead of the
event loop shows up directly in the request path's tail latency. Both processes therefore run as
``SCHED_BATCH`` (no wake-up preemption of interactive tasks) with a raised nice value: they use the
CPU the request path leaves, and when they fall behind, the bounded hand-off queue drops samples
(counted) rather than delaying requests, which is the collector contract.
"""

from __future__ import annotations

import logging
import os

__all__ = ["DEFAULT_BACKGROUND_NICE", "become_background"]

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND_NICE = 10


def become_background(nice: int) -> None:
    """Lower the calling process's priority; call before it starts threads (they inherit it).

    ``nice`` is the niceness to add (0 leaves the priority alone). Failures (a platform without
    ``SCHED_BATCH``, a container that forbids it) are logged and ignored: priority is an optimisation.
    """
    if nice <= 0:
        return
    try:
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.nice(min(nice, 19))
    except OSError as e:
        log.warning("could not lower the priority of background process %d: %s", os.getpid(), e)
