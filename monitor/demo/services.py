"""The demo's processes: the fixture server ("production VLM"), the proxy, the daemon + API.

Each runs as its own ``vlmwatch`` subprocess in a new session (so Ctrl-C reaches the demo, which
stops them in order), with logs in the demo folder.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["free_port", "Service", "Services"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self, env: dict[str, str], cwd: Path) -> None:
        log = open(self.log_path, "wb")  # this run's log (the health check reads it)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True)
        log.close()
        self.started_at = time.monotonic()
        logger.debug("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.argv))

    def healthy(self) -> bool:
        if self.health_url.startswith("log:"):  # a process without HTTP: a line in its log says it is up
            try:
                return self.health_url[4:] in self.log_path.read_text(errors="replace")
            except OSError:
                return False
        try:
            return httpx.get(self.health_url, timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}; see {self.log_path}:\n"
                                   + _tail(self.log_path))
            if self.healthy():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy within {timeout:.0f}s; see {self.log_path}:\n"
                           + _tail(self.log_path))

    def stop(self, timeout: float = 30.0) -> int | None:
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return p.poll()
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
            os.killpg(p.pid, signal.SIGKILL)
            return p.wait(10)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Services:
    """Start in order, stop in reverse order (clients first: proxy, then daemon, then the VLM)."""

    workdir: Path
    config_path: Path
    env: dict[str, str] = field(default_factory=dict)
    items: list[Service] = field(default_factory=list)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "DO_NOT_TRACK": "1"})
        env.update(self.env)
        return env

    def vlmwatch(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "monitor.cli", "--config", str(self.config_path), *args]

    def add(self, name: str, argv: list[str], health_url: str) -> Service:
        svc = Service(name, argv, health_url, self.workdir / f"{name}.log")
        self.items.append(svc)
        return svc

    def start_all(self, timeout: float = 120.0) -> None:
        env = self.child_env()
        for svc in self.items:
            svc.start(env, self.workdir)
        for svc in self.items:
            svc.wait_healthy(timeout)
            logger.info("%s is up (%.1fs)", svc.name, time.monotonic() - svc.started_at)

    def get(self, name: str) -> Service:
        return next(s for s in self.items if s.name == name)

    def stop_all(self, timeout: float = 30.0) -> dict[str, int | None]:
        codes = {}
        for svc in reversed(self.items):
            codes[svc.name] = svc.stop(timeout)
        return codes
