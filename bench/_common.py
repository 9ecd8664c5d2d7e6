"""Helpers shared by the bench scripts (not a benchmark itself)."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["torch_machine_info", "machine_info", "sync", "interleaved_rounds", "scratch_postgres", "cpu_fixture_run",
           "fixture_bench_parser"]


def machine_info() -> dict[str, Any]:
    """The ``machine`` block of a benchmark that needs no torch: host, niceness, cores, load, date."""
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        uname = " ".join(platform.uname())
    return {
        "uname": uname,
        "niceness": os.nice(0),  # the shared dev machine asks for nice -n 10
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
    }


def fixture_bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser of a bench on one model folder: ``--model`` (default the tiny LLaVA fixture), ``--threads``."""
    from pathlib import Path

    from monitor.fixtures.registry import fixture_dir

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=fixture_dir("tiny-llava"))
    ap.add_argument("--threads", type=int, default=1)
    return ap


def cpu_fixture_run(model: Any, threads: int) -> tuple[dict[str, Any], Any]:
    """Start a CPU benchmark of one model folder: INFO logging, ``threads`` torch threads; the
    ``machine`` block and the model loaded in float32."""
    import logging

    import torch

    from monitor.adapter import load_vlm

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    return machine_info(), load_vlm(model, device="cpu", dtype="float32")


@contextmanager
def scratch_postgres(admin_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new empty PostgreSQL database on ``admin_url``'s server, dropped afterwards: (its URL, server version)."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False), server
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU) so wall-clock times are real."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_rounds(
    fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each function over ``rounds`` rounds after ``warmup`` untimed ones.

    Each round calls every function once, in turn, so that load from other jobs on a shared box
    falls on all methods alike rather than on whichever ran during the spike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def torch_machine_info(
    torch_threads: int,
    load_average_before: tuple[float, float, float],
    packages: Sequence[str] = ("transformers",),
) -> dict[str, Any]:
    """The ``machine`` block of a torch benchmark's JSON: host, load, versions, CUDA device.

    ``packages`` are further import names whose ``__version__`` is recorded (after torch).
    """
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "load_average_before": load_average_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for name in packages:
        info[name] = __import__(name).__version__
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info
