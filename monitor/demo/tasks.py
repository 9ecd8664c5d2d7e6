"""The demo's task mix: which SynPOPE tasks its traffic carries, in what shares, and how a stored
prompt is traced back to its task (for the per-task figures of the summary and the report).

The mix is ``task:share`` pairs (``yesno:0.6,describe:0.4``, the default): each request's task is
drawn with these shares, from one seeded stream, so a run is reproducible. Free-form answers are
labelled by the task's judge (:func:`monitor.synpope.judge`), as yes/no answers are.
"""

from __future__ import annotations

import re
from functools import lru_cache

from monitor.synpope.tasks import TASK_TEMPLATES, TASKS

__all__ = ["DEFAULT_MIX", "parse_mix", "format_mix", "max_tokens_for", "task_of_prompt"]

DEFAULT_MIX: tuple[tuple[str, float], ...] = (("yesno", 0.6), ("describe", 0.4))

# the cap a demo client asks for: a yes/no answer is one token; a caption of up to four objects is
# ~8-12 tokens and must end by itself (a truncated answer would differ from the monitor's own
# greedy decode under the same cap only by chance, but it is not what a client would be served)
_MAX_TOKENS = {"yesno": 4}
FREEFORM_MAX_TOKENS = 24


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"yesno:0.6,describe:0.4"`` -> ``(("yesno", 0.6), ("describe", 0.4))``, shares normalised to 1.

    A bare task name counts as share 1. Unknown tasks, repeated tasks, and shares that are not
    positive numbers are refused with a message naming the known tasks.
    """
    pairs: list[tuple[str, float]] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, _, share = part.partition(":")
        name = name.strip()
        if name not in TASKS:
            raise ValueError(f"--tasks: unknown task {name!r}; expected some of {', '.join(TASKS)} "
                             f"as task:share pairs, e.g. yesno:0.6,describe:0.4")
        if any(name == n for n, _ in pairs):
            raise ValueError(f"--tasks: task {name!r} given twice")
        try:
            w = float(share) if share.strip() else 1.0
        except ValueError:
            raise ValueError(f"--tasks: share of {name!r} must be a number, got {share!r}") from None
        if not w > 0 or w != w or w == float("inf"):
            raise ValueError(f"--tasks: share of {name!r} must be > 0, got {share!r}")
        pairs.append((name, w))
    if not pairs:
        raise ValueError("--tasks: no task given; e.g. yesno:0.6,describe:0.4")
    total = sum(w for _, w in pairs)
    return tuple((n, w / total) for n, w in pairs)


def format_mix(mix: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{share:.0%} {task}" for task, share in mix)


def max_tokens_for(task: str) -> int:
    return _MAX_TOKENS.get(task, FREEFORM_MAX_TOKENS)


@lru_cache(maxsize=1)
def _patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    out = []
    for task, styles in TASK_TEMPLATES.items():
        for template in styles.values():
            rx = re.escape(template)
            for slot in ("object", "shape", "colour"):
                rx = rx.replace(re.escape("{" + slot + "}"), r"[a-z]+(?: [a-z]+)?")
            out.append((task, re.compile(rx + r"\Z")))
    return tuple(out)


def task_of_prompt(prompt: str) -> str | None:
    """The SynPOPE task whose templates phrase ``prompt`` (None for any other text)."""
    p = (prompt or "").strip()
    for task, rx in _patterns():
        if rx.match(p):
            return task
    return None
