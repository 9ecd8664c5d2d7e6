"""Long-running collector services (what ``vlmwatch proxy`` and ``vlmwatch tail`` run).

Plain arguments in, no config objects, so the collectors stay independent of ``monitor``.
The shipper runs in its own process beside a collector: its SQL work must not compete with
the proxy's event loop for the GIL.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.metrics import CollectorMetrics
from collectors.pipeline import load_redactor
from collectors.priority import DEFAULT_BACKGROUND_NICE, become_background
from collectors.proxy import ProxyServer, parse_listen, serve
from collectors.sampling import SamplingPolicy
from collectors.spool import SpoolWriter

__all__ = ["CollectorOptions", "ProxyOptions", "run_proxy", "run_tail", "start_shipper_process", "tail_lane"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectorOptions:
    spool_dir: str
    spool_max_bytes: int = 1_000_000_000
    storage_url: str | None = None  # None: no shipper here (the daemon ships spool_dir)
    storage_password_env: str | None = "VLMWATCH_DB_PASSWORD"  # name of the env var holding the DB password (never the secret)
    ship_interval: float = 2.0
    sample_rate: float = 0.1
    rates: dict[str, float] = field(default_factory=dict)
    queue_size: int = 1000
    max_image_bytes: int = 20_000_000
    redact_hook: str = ""
    tasks: list[dict[str, str | None]] = field(default_factory=list)  # collectors.tasks (storage.tasks), applied by the shipper
    log_level: str = "INFO"
    background_nice: int = DEFAULT_BACKGROUND_NICE  # sampler and shipper processes yield the CPU to the request path


@dataclass(frozen=True)
class ProxyOptions:
    """What ``vlmwatch proxy`` adds to :class:`CollectorOptions` (see :class:`collectors.proxy.ProxyServer`)."""

    upstream_url: str
    listen: str  # HOST:PORT
    max_body_bytes: int = 25_000_000
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    metrics_path: str = "/metrics"


def _shipper_main(spool_dir: str, storage_url: str, password_env: str | None, interval: float,
                  max_image_bytes: int, level: str, nice: int, values: Any = None,
                  tasks: list[dict[str, str | None]] | None = None) -> None:
    stop = threading.Event()  # before the slow imports: a SIGTERM while starting still gets the final round
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    become_background(nice)
    from collectors.shipper import Shipper
    from storage.tasks import TaskRules
    import storage.db, storage.repo_samples  # noqa: F401,E401 - imported at start, not in the first round

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shipper = Shipper(spool_dir, storage_url, password_env=password_env, interval=interval,
                      max_image_bytes=max_image_bytes, stop=stop, tasks=TaskRules.from_config(tasks or ()))
    if values is not None:  # the collector's /metrics serves these
        from collectors.metrics import publish_shipper

        def publish() -> None:
            while not stop.wait(0.5):
                publish_shipper(shipper.metrics, values)

        threading.Thread(target=publish, name="vlmwatch-shipper-metrics", daemon=True).start()
    shipper.run()
    shipper.stop()
    if values is not None:
        publish_shipper(shipper.metrics, values)


def start_shipper_process(opts: CollectorOptions, metrics: CollectorMetrics | None = None) -> Any:
    """A shipper in a child process (spawned: no inherited event loop or threads); its counters
    appear on ``metrics`` (the collector's ``/metrics``) through shared memory."""
    if not opts.storage_url:
        return None
    ctx = multiprocessing.get_context("spawn")
    values = None
    if metrics is not None:
        values = ctx.RawArray("d", 3)
        metrics.mirror_shipper(values)
    proc = ctx.Process(
        target=_shipper_main,
        args=(opts.spool_dir, opts.storage_url, opts.storage_password_env, opts.ship_interval,
              opts.max_image_bytes, opts.log_level, opts.background_nice, values, opts.tasks),
        name="vlmwatch-shipper",
        daemon=True,
    )
    proc.start()
    log.info("shipper process %d ships %s to storage", proc.pid, opts.spool_dir)
    return proc


def _stop_process(proc: Any) -> None:
    if proc is not None and proc.is_alive():
        proc.terminate()  # SIGTERM: it finishes its round; shipping is idempotent anyway
        proc.join(15)


def _check_spool_dir(path: str) -> None:
    """Fail at start-up, with a clear message, rather than lose every sample later."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"spool directory {p} cannot be created: {e}") from None
    if not os.access(p, os.W_OK):
        raise ValueError(f"spool directory {p} is not writable")


def run_proxy(opts: CollectorOptions, proxy: ProxyOptions, *, ready: Any = None) -> int:
    from collectors.sampler_process import start_sampler

    host, port = parse_listen(proxy.listen)
    policy = SamplingPolicy(opts.sample_rate, opts.rates)
    _check_spool_dir(opts.spool_dir)
    load_redactor(opts.redact_hook)  # fail fast on a bad hook; the sampler process imports it again
    metrics = CollectorMetrics("proxy")
    metrics.watch_spool(opts.spool_dir)  # the shipper process's dead letters, counted from their files
    sampler = start_sampler(metrics, spool_dir=opts.spool_dir, lane=f"proxy-{port}",
                            spool_max_bytes=opts.spool_max_bytes, sample_rate=opts.sample_rate, rates=opts.rates,
                            max_image_bytes=opts.max_image_bytes, redact_hook=opts.redact_hook,
                            queue_size=opts.queue_size, log_level=opts.log_level, nice=opts.background_nice)
    server = ProxyServer(proxy.upstream_url, policy=policy, pipeline=sampler, metrics=metrics,
                         connect_timeout=proxy.connect_timeout, read_timeout=proxy.read_timeout,
                         max_body_bytes=proxy.max_body_bytes, metrics_path=proxy.metrics_path)
    shipper = start_shipper_process(opts, metrics)
    try:
        serve(server, host, port, ready)
    finally:
        sampler.close()
        _stop_process(shipper)
    return 0


def tail_lane(path: str | Path) -> str:
    """Spool lane of a tailed file: its name plus a hash of its absolute path."""
    p = Path(path).resolve()
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", p.name)[:60]
    return f"tail-{stem}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"


def run_tail(opts: CollectorOptions, path: str, *, from_end: bool = False, poll_interval: float = 0.5) -> int:
    from collectors.tailer import Tailer

    lane = tail_lane(path)
    metrics = CollectorMetrics("tailer")
    writer = SpoolWriter(opts.spool_dir, lane, max_bytes=opts.spool_max_bytes,
                         on_drop=lambda n: metrics.drop("spool_full", n))
    tailer = Tailer(path, checkpoint=Path(opts.spool_dir) / lane / "tail-checkpoint.json", sink=writer,
                    policy=SamplingPolicy(opts.sample_rate, opts.rates), metrics=metrics,
                    max_image_bytes=opts.max_image_bytes, redact=load_redactor(opts.redact_hook),
                    poll_interval=poll_interval, from_end=from_end)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: tailer.stop())
        signal.signal(signal.SIGINT, lambda *_: tailer.stop())
    shipper = start_shipper_process(opts, metrics)
    log.info("tailing %s into spool lane %s", path, lane)
    try:
        tailer.run()
    finally:
        tailer.close()
        writer.close()
        _stop_process(shipper)
        log.info("tailer stopped: %d lines read, %d unusable", tailer.lines_read, tailer.bad_lines)
    return 0
