"""The calibration drift report: Evidently HTML, reliability diagrams, timelines, JSON summary."""

from monitor.report.build import REPORT_FILES, build_report
from monitor.report.data import parse_since

__all__ = ["build_report", "parse_since", "REPORT_FILES"]
