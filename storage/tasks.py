"""A sample's task: given explicitly at ingest, else inferred from its prompt or route by ordered patterns.

The patterns are the ``collectors.tasks`` configuration (``monitor.config``): a list of
``{name, prompt_regex, route_regex}``; the first whose given regexes all match (``re.search``,
case-insensitive) names the task. No match, or no patterns: no task (``None``), and the sample
counts only in the overall calibration windows and detectors. An explicit task (the ``task`` field
of a samples-file line, an API sample, a tailed line) always wins over the patterns.

Applied in one place, :func:`storage.repo_samples.ingest_samples` (every collector's shipper, the
``ingest`` command and the API pass their :class:`TaskRules`). Standard library only, like
:mod:`storage.records`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TASK_NAME", "TaskRule", "TaskRules", "check_task_name"]

TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also keeps "@" (detector slice names) out


def check_task_name(name: Any, what: str = "task") -> str:
    """``name`` if it is a valid task name, else ValueError saying why."""
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def _compile(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{what} must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression: {e}") from None


@dataclass(frozen=True)
class TaskRule:
    name: str
    prompt: re.Pattern[str] | None = None
    route: re.Pattern[str] | None = None

    def matches(self, prompt: str, route: str | None) -> bool:
        if self.prompt is not None and not self.prompt.search(prompt or ""):
            return False
        return self.route is None or bool(self.route.search(route or ""))


class TaskRules:
    """The ordered task patterns; :meth:`task_of` picks a sample's task."""

    def __init__(self, rules: Iterable[TaskRule] = ()) -> None:
        self.rules = tuple(rules)

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any] | Any]) -> TaskRules:
        """From ``collectors.tasks`` entries (mappings or objects with ``name``, ``prompt_regex``,
        ``route_regex``). ValueError naming the entry and the bad pattern."""
        rules = []
        for i, e in enumerate(entries):
            get = e.get if isinstance(e, Mapping) else lambda k, e=e: getattr(e, k, None)
            name = check_task_name(get("name"), f"collectors.tasks[{i}].name")
            p, r = get("prompt_regex"), get("route_regex")
            if p is None and r is None:
                raise ValueError(f"collectors.tasks[{i}] ({name}): give prompt_regex, route_regex or both")
            rules.append(TaskRule(name, _compile(p, f"collectors.tasks[{i}].prompt_regex ({name})"),
                                  _compile(r, f"collectors.tasks[{i}].route_regex ({name})")))
        return cls(rules)

    def to_plain(self) -> list[dict[str, str | None]]:
        """Picklable form (the shipper process gets it as a plain argument)."""
        return [{"name": r.name, "prompt_regex": r.prompt.pattern if r.prompt else None,
                 "route_regex": r.route.pattern if r.route else None} for r in self.rules]

    def task_of(self, prompt: str, route: str | None, explicit: str | None = None) -> str | None:
        """``explicit`` when given, else the first matching rule's name, else None."""
        if explicit:
            return explicit
        for rule in self.rules:
            if rule.matches(prompt, route):
                return rule.name
        return None

    def __bool__(self) -> bool:
        return bool(self.rules)
