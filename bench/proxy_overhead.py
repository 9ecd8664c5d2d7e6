"""Added latency of the vlmwatch proxy, side by side with calling the same upstream directly.

One run, on loopback: a canned-response OpenAI-compatible upstream (``collectors.canned_upstream``,
not a model, so the figure isolates the proxy), the proxy (``vlmwatch proxy`` with 10% sampling,
its shipper process shipping to a SQLite database), and an open-loop load generator at fixed
request rates. Each request carries a ~100 KB PNG data URL. For every (rate, mode) the run
alternates direct and proxied phases (``--repeats`` pairs, order flipped each pair); the added
latency is the median over pairs of (proxied - direct) percentile. Latency is measured from each
request's *scheduled* send time, so queueing behind a slow proxy counts (no coordinated omission).
A last pair per mode runs with storage unreachable and counts failed client requests.

    .venv/bin/python bench/proxy_overhead.py            # writes bench/results/proxy_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image_data_url(target_chars: int = 100_000) -> str:
    from PIL import Image

    rng = random.Random(0)
    side = 160
    img = Image.frombytes("RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert abs(len(url) - target_chars) < 15_000, len(url)
    return url


def _requests(n: int, stream: bool) -> list[bytes]:
    url = _image_data_url()
    out = []
    for i in range(n):
        body = json.dumps({
            "model": "llava-fixture",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": f"Is there a cat in the image? (request {i})"},
                {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 16, "stream": stream,
        }).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer bench\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


# --- open-loop load generator ---------------------------------------------------------------------
class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser: Any = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.fut: asyncio.Future[int] | None = None
        self.status = 0
        self.broken = False
        self.keep = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as e:  # noqa: BLE001 - a broken answer is a failed request
            self.broken = True
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(e)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.keep = self.parser.should_keep_alive()  # only valid inside the parser's callbacks
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed"))


async def _phase(port: int, rate: float, duration: float, reqs: list[bytes], warmup: float = 1.0,
                 max_conns: int = 128) -> dict[str, Any]:
    """Open loop: request i is due at t0 + i/rate whatever happened before; latency counts from then.

    Connections come from a keep-alive pool of at most ``max_conns`` (like a real client's pool);
    a request that finds none free waits for one, and that wait is part of its latency.
    """
    loop = asyncio.get_running_loop()
    idle: asyncio.LifoQueue[_Conn] = asyncio.LifoQueue()
    lat: list[float] = []
    failed = 0
    why: dict[str, int] = {}
    opened = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(req: bytes, t_sched: float, measure: bool) -> None:
        nonlocal failed, opened
        conn = None
        try:
            if not idle.empty() or opened >= max_conns:
                conn = await asyncio.wait_for(idle.get(), 10.0)
            else:
                opened += 1
                try:
                    _, conn = await asyncio.wait_for(loop.create_connection(_Conn, "127.0.0.1", port), 10.0)
                except OSError:
                    opened -= 1
                    raise
            conn.fut = loop.create_future()
            conn.transport.write(req)
            status = await asyncio.wait_for(conn.fut, 10.0)
            if measure:
                lat.append((time.perf_counter() - t_sched) * 1e3)
                if status != 200:
                    failed += 1
                    why[f"status {status}"] = why.get(f"status {status}", 0) + 1
            if not conn.broken and conn.keep:
                idle.put_nowait(conn)
            else:
                conn.transport.close()
                opened -= 1
        except Exception as e:  # noqa: BLE001 - timeouts, resets, refused: all failed requests
            if measure:
                failed += 1
                why[type(e).__name__] = why.get(type(e).__name__, 0) + 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
                opened -= 1

    interval = 1.0 / rate
    t0 = time.perf_counter() + 0.05
    n_warm = int(warmup * rate)
    n = n_warm + int(duration * rate)
    i = 0
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i * interval <= now:
            t = loop.create_task(one(reqs[i % len(reqs)], t0 + i * interval, i >= n_warm))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
    t_end = time.perf_counter()
    if tasks:
        await asyncio.wait(list(tasks), timeout=15)
    while not idle.empty():
        idle.get_nowait().transport.close()
    measured = n - n_warm
    errors = sum(v for k, v in why.items() if not k.startswith("status"))
    unfinished = measured - len(lat) - errors  # still waiting when the phase's grace period ended
    lat.sort()
    return {
        "sent": measured,
        "completed": len(lat),
        "failed": failed + unfinished,
        "failures": {**why, **({"unfinished": unfinished} if unfinished else {})},
        "p50": lat[len(lat) // 2] if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
        "rps": len(lat) / max(1e-9, (t_end - t0) - warmup),
    }


def run_phase(port: int, rate: float, duration: float, reqs: list[bytes]) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_phase(port, rate, duration, reqs))


# --- processes -------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(port: int, name: str) -> float:
    for attempt in range(5):  # an overloaded host can leave the proxy busy for seconds after a phase
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
            break
        except OSError:
            if attempt == 4:
                raise
            time.sleep(2)
    m = re.search(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+]+)", text)
    return float(m.group(1)) if m else 0.0


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_upstream(port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "collectors.canned_upstream", "--listen", f"127.0.0.1:{port}"],
                         cwd=ROOT)
    _wait_http(f"http://127.0.0.1:{port}/v1/models", p)
    return p


def start_proxy(port: int, upstream: int, workdir: Path, storage_url: str, sample_rate: float,
                background_nice: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMWATCH_")}
    env.update({"VLMWATCH_STORAGE__URL": storage_url, "VLMWATCH_SPOOL__DIR": str(workdir / "spool"),
                "VLMWATCH_SPOOL__BACKGROUND_NICE": str(background_nice)})
    p = subprocess.Popen([sys.executable, "-m", "monitor.cli", "--log-level", "ERROR", "proxy",
                          "--upstream", f"http://127.0.0.1:{upstream}", "--listen", f"127.0.0.1:{port}",
                          "--sample-rate", str(sample_rate)], cwd=workdir, env=env)
    _wait_http(f"http://127.0.0.1:{port}/metrics", p)
    return p


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import uvloop

    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "uvloop": uvloop.__version__, "loadavg_at_start": os.getloadavg()}


# --- main ------------------------------------------------------------------------------------------
def pairs(proxy_port: int, upstream: int, proxy_pid: int, rate: float, mode: str, duration: float,
          repeats: int, reqs: list[bytes]) -> dict[str, Any]:
    runs = []
    for rep in range(repeats):
        order = ("direct", "proxy") if rep % 2 == 0 else ("proxy", "direct")
        res: dict[str, Any] = {}
        for which in order:
            port = upstream if which == "direct" else proxy_port
            cpu0 = _cpu_seconds(proxy_pid)
            res[which] = run_phase(port, rate, duration, reqs)
            if which == "proxy":
                res["proxy_cpu_ms_per_request"] = (_cpu_seconds(proxy_pid) - cpu0) * 1e3 / max(1, res[which]["completed"])
        res["loadavg_1m"] = round(os.getloadavg()[0], 2)
        runs.append(res)
        print(f"  {mode} {rate:g}/s pair {rep + 1}: direct p50 {res['direct']['p50']:.2f} p99 {res['direct']['p99']:.2f}"
              f" | proxy p50 {res['proxy']['p50']:.2f} p99 {res['proxy']['p99']:.2f} failed {res['proxy']['failed']}",
              flush=True)
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    return {
        "rate": rate,
        "mode": mode,
        "p50_added_ms": med([r["proxy"]["p50"] - r["direct"]["p50"] for r in runs]),
        "p99_added_ms": med([r["proxy"]["p99"] - r["direct"]["p99"] for r in runs]),
        "rps": round(statistics.median([r["proxy"]["rps"] for r in runs]), 1),
        "failed_requests": sum(r["proxy"]["failed"] for r in runs),
        "failure_kinds": {k: sum(r["proxy"]["failures"].get(k, 0) for r in runs)
                          for k in sorted({k for r in runs for k in r["proxy"]["failures"]})},
        "direct_failed_requests": sum(r["direct"]["failed"] for r in runs),
        "direct_p50_ms": med([r["direct"]["p50"] for r in runs]),
        "direct_p99_ms": med([r["direct"]["p99"] for r in runs]),
        "proxy_p50_ms": med([r["proxy"]["p50"] for r in runs]),
        "proxy_p99_ms": med([r["proxy"]["p99"] for r in runs]),
        "proxy_cpu_ms_per_request": med([r["proxy_cpu_ms_per_request"] for r in runs]),
        "requests_per_phase": runs[0]["proxy"]["sent"],
        # the least disturbed pair: an estimate of the proxy's own cost on a busy shared host
        "best_pair_p50_added_ms": round(min(r["proxy"]["p50"] - r["direct"]["p50"] for r in runs), 3),
        "best_pair_p99_added_ms": round(min(r["proxy"]["p99"] - r["direct"]["p99"] for r in runs), 3),
        "loadavg_1m_per_pair": [r["loadavg_1m"] for r in runs],
        "pairs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="250,500,1000")
    ap.add_argument("--modes", default="json,stream")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per phase")
    ap.add_argument("--repeats", type=int, default=5, help="direct/proxy pairs per rate and mode")
    ap.add_argument("--sample-rate", type=float, default=0.1)
    ap.add_argument("--background-nice", type=int, default=10,
                    help="spool.background_nice of the proxy's sampler and shipper processes (0: same priority)")
    ap.add_argument("--down-rate", type=float, default=1000.0, help="rate of the storage-down check")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "proxy_overhead.json"))
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. what else ran on the host)")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    modes = args.modes.split(",")
    info = machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vlmwatch-bench-") as tmp:
        work = Path(tmp)
        from storage.db import upgrade

        db = f"sqlite:///{work / 'bench.db'}"
        upgrade(db)
        up_port, px_port = _free_port(), _free_port()
        upstream = start_upstream(up_port)
        try:
            for storage in ("up", "down"):
                url = db if storage == "up" else f"postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/none"
                proxy = start_proxy(px_port, up_port, work, url, args.sample_rate, args.background_nice)
                try:
                    for mode in modes:
                        reqs = _requests(200, stream=mode == "stream")
                        run_phase(px_port, 200, 1.0, reqs)  # warm the proxy process
                        for rate in (rates if storage == "up" else [args.down_rate]):
                            before = _metric(px_port, "vlmwatch_collector_samples_spooled_total")
                            seen0 = _metric(px_port, "vlmwatch_collector_requests_total")
                            row = pairs(px_port, up_port, proxy.pid, rate, mode, args.duration,
                                        args.repeats if storage == "up" else 1, reqs)
                            row["storage"] = storage
                            seen = _metric(px_port, "vlmwatch_collector_requests_total") - seen0
                            time.sleep(0.5)
                            row["sampled_share"] = round(
                                (_metric(px_port, "vlmwatch_collector_samples_spooled_total") - before) / max(1, seen), 4)
                            rows.append(row)
                finally:
                    stop(proxy)
            if True:  # what reached storage while it was up (shipper process beside the proxy)
                from sqlalchemy import func, select

                from storage.db import make_engine
                from storage.models import Sample

                eng = make_engine(db)
                with eng.connect() as c:
                    info["samples_in_storage_after_run"] = c.execute(select(func.count()).select_from(Sample)).scalar_one()
                eng.dispose()
        finally:
            stop(upstream)
    info["loadavg_at_end"] = os.getloadavg()
    summary = [{k: v for k, v in r.items() if k != "pairs"} for r in rows]
    out = {
        "benchmark": "proxy_overhead",
        "description": "added latency of the vlmwatch proxy vs calling the canned upstream directly; open-loop; "
                       "~100 KB PNG data URL per request; 10% sampling; proxy, upstream and load generator on one host",
        "machine": info,
        "note": args.note,
        "params": {"duration_s": args.duration, "repeats": args.repeats, "sample_rate": args.sample_rate,
               "background_nice": args.background_nice,
                   "body_bytes": len(_requests(1, False)[0])},
        "summary": summary,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for r in summary:
        print(f"{r['storage']:>4} {r['mode']:>6} {r['rate']:>6g}/s  p50 +{r['p50_added_ms']:.3f} ms  "
              f"p99 +{r['p99_added_ms']:.3f} ms  rps {r['rps']:.0f}  failed {r['failed_requests']}  "
              f"cpu {r['proxy_cpu_ms_per_request']:.3f} ms/req  sampled {r['sampled_share']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
