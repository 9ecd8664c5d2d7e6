"""The monitoring daemon: APScheduler jobs over storage, leases, leadership, shutdown."""

from monitor.daemon.locks import DaemonAlreadyRunning, LeaderLock, SqliteDaemonLock
from monitor.daemon.service import LEADER_JOBS, WORKER_JOBS, Daemon

__all__ = ["Daemon", "DaemonAlreadyRunning", "LeaderLock", "SqliteDaemonLock", "LEADER_JOBS", "WORKER_JOBS"]
