"""``vlmwatch proxy --upstream URL --listen HOST:PORT``: the fail-open sampling sidecar.

Relays every request to the upstream OpenAI-compatible server unchanged, samples a fraction
(``proxy.sample_rate`` / ``proxy.rates``) into the spool (``spool.dir``, lane ``proxy-<port>``), and
ships the spool to storage from a child process unless ``spool.collector_ships`` is false or
``--no-ship`` is given (then the daemon ships it). Prometheus metrics: ``GET /metrics``.
"""

from __future__ import annotations

import argparse

from monitor.commands import add_command
from monitor.commands._collector import add_collector_args

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from collectors.service import ProxyOptions, run_proxy
    from monitor.commands import CommandError
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
        raise CommandError(str(e), command="proxy") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(sub, "proxy", _run, help="sampling sidecar proxy in front of an OpenAI-compatible VLM server",
                    description=__doc__)
    p.add_argument("--upstream", metavar="URL", help="upstream server, e.g. http://127.0.0.1:8000 (proxy.upstream_url)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to accept clients on (proxy.listen)")
    add_collector_args(p, sample_rate_help="default sampling rate (proxy.sample_rate)")
