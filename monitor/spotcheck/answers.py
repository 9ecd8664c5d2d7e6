"""Answer normalisation, grouping of equivalent answers, agreement and entropy over groups.

Normalisation follows the VQA / SQuAD evaluation habit: lower case, punctuation removed,
articles dropped, number words written as digits, whitespace collapsed. An answer that starts
with "yes" or "no" (``"Yes, there is a dog."``) is grouped with the bare word, because for a
yes/no question the rest of the sentence restates the question.

Free text groups by :func:`content_words`, the default answer equivalence of multi-token spot
checks: the set of the normalised answer's content words, function words and the framing of a
caption ("the image shows", "there is") dropped and plurals folded, so "A red circle and a blue
star." and "There are a blue star and a red circle" are one answer. Negations ("no", "not") are
content. A task that knows its answers better passes its own key (SynPOPE's
:func:`monitor.synpope.judges.answer_key`).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "SPOTCHECK_CORRECT_AT",
    "spotcheck_correct",
    "normalize_answer",
    "content_words",
    "word_support",
    "GroupStats",
    "group_counts",
    "group_stats",
    "stats_from_distribution",
]

SPOTCHECK_CORRECT_AT = 0.5  # agreement at which a spot-checked served answer counts as correct


def spotcheck_correct(agreement: float) -> bool:
    """The one definition of a correct spot check: the served answer's group holds at least half of
    the sampled answers (or of the exact one-token probability), ``agreement >= 0.5``.

    The spot-check job writes it into the self-consistency label, the evidence loader reads it from
    ``spot_checks.agreement``, and SQL filters use ``agreement >= SPOTCHECK_CORRECT_AT``.
    """
    return float(agreement) >= SPOTCHECK_CORRECT_AT


_ARTICLES = {"a", "an", "the"}
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_YES_NO = {"yes", "no"}
# keep digits' decimal point and hyphens between number words until the number pass has run
_PUNCT = re.compile("[" + re.escape("".join(c for c in string.punctuation if c not in "-.")) + "]")


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Rewrite number words (0-99, hyphenated or spaced compounds) as digits."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        parts = w.split("-")
        if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS and 0 < _UNITS[parts[1]] < 10:
            out.append(str(_TENS[parts[0]] + _UNITS[parts[1]]))
        elif w in _TENS:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if nxt in _UNITS and 0 < _UNITS[nxt] < 10:
                out.append(str(_TENS[w] + _UNITS[nxt]))
                i += 1
            else:
                out.append(str(_TENS[w]))
        elif w in _UNITS:
            out.append(str(_UNITS[w]))
        else:
            out.append(w)
        i += 1
    return out


def normalize_answer(text: str, *, yes_no_prefix: bool = True) -> str:
    """Canonical form of an answer for grouping; ``""`` for an empty answer."""
    if not isinstance(text, str):
        raise TypeError(f"answer must be a str, got {type(text).__name__}")
    t = unicodedata.normalize("NFKC", text).lower()
    t = _PUNCT.sub(" ", t)
    words = []
    for w in t.split():
        w = w.strip("-")
        # a dot is punctuation unless it sits between digits ("3.5")
        w = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", w).strip()
        words.extend(w.split())
    words = [w for w in words if w]
    if len(words) > 1:  # a lone "A" is a multiple-choice letter, not an article
        words = [w for w in words if w not in _ARTICLES] or words[:1]
    words = _numbers_to_digits(words)
    if yes_no_prefix and words and words[0] in _YES_NO:
        return words[0]
    return " ".join(words)


_FUNCTION_WORDS = frozenset("""
a an the this that these those there here it its it's is are was were be been being am do does did
has have had having of in on at to for from by with without into onto over under near next beside
behind above below between and or but also as so than then both either each all some any
i we you he she they me us him her them my our your his their can could would should will shall may
might must just very quite only image picture photo photograph scene shows show showing shown
depicts depicting depicted contains containing see seen visible appear appears appearing
""".split())
_NEGATIONS = frozenset({"no", "not", "none", "nothing", "nobody", "never", "neither", "nor"})


def _singular(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz" or w.endswith(("ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def content_words(text: str) -> str:
    """The default equivalence of free-text answers: sorted unique content words of
    :func:`normalize_answer` (a bare "yes"/"no" stays itself; an answer of function words only
    keeps its normalised text)."""
    norm = normalize_answer(text)
    if norm in _YES_NO:
        return norm
    words = sorted({_singular(w) for w in norm.split() if w in _NEGATIONS or w not in _FUNCTION_WORDS})
    return " ".join(words) if words else norm


def word_support(served_answer: str, sampled: Iterable[str]) -> dict[str, float]:
    """SelfCheckGPT-style support: for each content word of the served answer, the share of the
    sampled answers whose content words include it (a word the model names in only a few of its
    samples is a likely hallucination). Empty for a yes/no answer or no samples."""
    served = content_words(served_answer)
    bags = [set(content_words(a).split()) for a in sampled]
    if served in _YES_NO or not bags:
        return {}
    return {w: sum(w in b for b in bags) / len(bags) for w in served.split()}


@dataclass(frozen=True)
class GroupStats:
    """Agreement of a served answer with a distribution over answer groups."""

    served_group: str
    agreement: float  # mass (share of K answers, or probability) in the served answer's group
    entropy: float  # over groups, nats
    majority_group: str  # group with the largest mass (ties: the served group, else lexicographic)
    majority_share: float
    agrees_with_majority: bool  # served group is (one of) the largest groups
    groups: dict[str, float]  # group -> count (sampled) or probability (exact)


def group_counts(answers: Iterable[str], *, yes_no_prefix: bool = True,
                 key: Callable[[str], str] | None = None) -> Counter[str]:
    """Count answers by group: ``key(answer)`` when given (a task's answer equivalence), else the
    normalised answer."""
    if key is None:
        return Counter(normalize_answer(a, yes_no_prefix=yes_no_prefix) for a in answers)
    return Counter(key(a) for a in answers)


def stats_from_distribution(served_group: str, masses: Mapping[str, float]) -> GroupStats:
    """Agreement and entropy for a served group against masses (counts or probabilities) per group."""
    total = float(sum(masses.values()))
    if total <= 0:
        raise ValueError("group masses must have a positive total")
    if any(v < 0 for v in masses.values()):
        raise ValueError("group masses must be non-negative")
    probs = {g: v / total for g, v in masses.items() if v > 0}
    entropy = -sum(p * math.log(p) for p in probs.values())
    top = max(probs.values())
    tops = sorted(g for g, p in probs.items() if p >= top - 1e-12)
    majority = served_group if served_group in tops else tops[0]
    agreement = probs.get(served_group, 0.0)
    return GroupStats(
        served_group=served_group,
        agreement=agreement,
        entropy=max(0.0, entropy),
        majority_group=majority,
        majority_share=top,
        agrees_with_majority=served_group in tops,
        groups=dict(masses),
    )


def group_stats(served_answer: str, sampled: Iterable[str], *, yes_no_prefix: bool = True,
                key: Callable[[str], str] | None = None) -> GroupStats:
    """Agreement of ``served_answer`` with K sampled answers, grouped after normalisation (or by
    ``key``, see :func:`group_counts`)."""
    counts = group_counts(sampled, yes_no_prefix=yes_no_prefix, key=key)
    if not counts:
        raise ValueError("no sampled answers to compare with")
    served = key(served_answer) if key is not None else normalize_answer(served_answer, yes_no_prefix=yes_no_prefix)
    return stats_from_distribution(served, {g: float(c) for g, c in counts.items()})
