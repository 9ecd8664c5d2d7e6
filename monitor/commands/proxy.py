"""``vlmwatch proxy --upstream URL --listen HOST:PORT``: the fail-open sampling sidecar.

Relays every request to the upstream OpenAI-compatible server unchanged, samples a fraction
(``proxy.sample_rate`` / ``proxy.rates``) into the spool (``spool.dir``, lane ``proxy-<port>``), and
ships the spool to storage from a child process unless ``spool.collector_ships`` is false or
``--no-ship`` is given (then the daemon ships it). Prometheus metrics: ``GET /metrics``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from collectors.service import ProxyOptions, run_proxy
    from monitor.commands._collector import collector_options

    s, opts = collector_options(args, proxy_queue=True)
    try:
        return run_proxy(opts, ProxyOptions(
            upstream_url=args.upstream or s.proxy.upstream_url,
            listen=args.listen or s.proxy.listen,
            max_body_bytes=s.proxy.max_body_bytes,
            connect_timeout=s.proxy.connect_timeout_seconds,
            read_timeout=s.proxy.read_timeout_seconds,
            metrics_path=s.proxy.metrics_path,
        ))
    except (ValueError, OSError) as e:
        print(f"vlmwatch proxy: {e}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("proxy", help="sampling sidecar proxy in front of an OpenAI-compatible VLM server",
                       description=__doc__)
    p.add_argument("--upstream", metavar="URL", help="upstream server, e.g. http://127.0.0.1:8000 (proxy.upstream_url)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to accept clients on (proxy.listen)")
    p.add_argument("--spool", metavar="DIR", help="spool directory (spool.dir)")
    p.add_argument("--sample-rate", type=float, default=None, help="default sampling rate (proxy.sample_rate)")
    p.add_argument("--no-ship", action="store_true", help="do not ship the spool to storage from here")
    p.set_defaults(func=_run)
