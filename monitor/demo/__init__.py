"""The end-to-end demo (``vlmwatch demo``): fixture VLM, proxy, daemon, API, traffic, shift, report."""

from monitor.demo.plan import DemoPlan, parse_duration
from monitor.demo.run import run_demo

__all__ = ["DemoPlan", "parse_duration", "run_demo"]
