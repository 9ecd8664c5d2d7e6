"""One spot check: the exact first-token distribution for one-token answers, K samples otherwise.

For a one-token answer (yes/no, a multiple-choice letter) K samples would only estimate the
first-token probability (standard error ~0.13 at p=0.8 with K=10); the exact value is the softmax
of the prefill logits, so that is recorded instead and no decode runs. Tokens are grouped by the
same normalisation as sampled answers, so "Yes" and "yes" count together. A longer answer that
would start with the token counts in the token's group: exact for yes/no (where "Yes, there is..."
groups with "yes" anyway) and letters, an approximation for open one-word answers.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from monitor.spotcheck.answers import (GroupStats, content_words, group_stats, normalize_answer, stats_from_distribution,
                                       word_support)
from monitor.spotcheck.sampler import prefill, sample_shared_prefill

__all__ = [
    "SpotCheckResult",
    "SetEquivalence",
    "is_one_token_answer",
    "vocab_groups",
    "exact_group_distribution",
    "stream_seeds",
    "run_spot_check",
]

log = logging.getLogger(__name__)

_TRAILING = " \t\n.!?,;:"
_GROUP_CACHE: weakref.WeakKeyDictionary[Any, tuple[list[str], torch.Tensor]] = weakref.WeakKeyDictionary()
TOP_GROUPS_STORED = 10  # exact distributions keep this many groups, the rest as "<other>"


@dataclass(frozen=True)
class SpotCheckResult:
    one_token: bool
    k: int  # sampled answers (0 for the exact one-token path)
    stats: GroupStats
    answers: list[str]  # the K decoded answers (empty for one-token)
    compute_seconds: float
    oom_splits: int = 0
    support: dict[str, float] | None = None  # free text: content word -> share of the K answers using it


@runtime_checkable
class SetEquivalence(Protocol):
    """An equivalence that needs all the answers of a check at once (an embedding model's grouping,
    :class:`monitor.spotcheck.embedding_equivalence.EmbeddingEquivalence`): ``grouping(answers)``
    returns the key of each; ``last_seconds`` is the compute that grouping took."""

    last_seconds: float

    def grouping(self, answers: list[str]) -> Callable[[str], str]: ...


def is_one_token_answer(tokenizer: Any, answer: str) -> bool:
    """The served answer, without trailing punctuation, is a single token of the vocabulary."""
    core = answer.strip().rstrip(_TRAILING)
    if not core:
        return False
    ids = tokenizer(core, add_special_tokens=False)["input_ids"]
    return len(ids) == 1


def vocab_groups(tokenizer: Any, vocab_size: int) -> tuple[list[str], torch.Tensor]:
    """Normalised group of every token id: (group names, LongTensor[vocab_size] of group index).

    Special tokens (EOS, padding) decode to "" and form the empty-answer group. Cached per tokenizer.
    """
    cached = _GROUP_CACHE.get(tokenizer)
    if cached is not None and cached[1].numel() == vocab_size:
        return cached
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=True)
    names: list[str] = []
    index: dict[str, int] = {}
    idx = torch.empty(vocab_size, dtype=torch.long)
    for i, t in enumerate(texts):
        g = normalize_answer(t)
        if g not in index:
            index[g] = len(names)
            names.append(g)
        idx[i] = index[g]
    _GROUP_CACHE[tokenizer] = (names, idx)
    return names, idx


def exact_group_distribution(
    logits: torch.Tensor, tokenizer: Any, temperature: float = 1.0
) -> dict[str, float]:
    """Probability of each answer group for the first token: softmax(logits / T) summed per group."""
    t = temperature if temperature > 0 else 1.0
    probs = torch.softmax(logits.detach().cpu().double() / t, dim=-1)
    names, idx = vocab_groups(tokenizer, probs.numel())
    mass = torch.zeros(len(names), dtype=torch.float64).index_add_(0, idx, probs)
    return {names[i]: float(mass[i]) for i in range(len(names)) if mass[i] > 0}


def stream_seeds(sample_id: str, k: int, salt: int = 0) -> list[int]:
    """Reproducible per-stream seeds derived from the sample id."""
    h = int.from_bytes(hashlib.sha256(f"{salt}:{sample_id}".encode()).digest()[:6], "big")
    return [h + i for i in range(k)]


def _compact(dist: Mapping[str, float], served: str) -> dict[str, float]:
    top = sorted(dist.items(), key=lambda kv: -kv[1])[:TOP_GROUPS_STORED]
    kept = dict(top)
    if served in dist:
        kept[served] = dist[served]
    other = sum(v for g, v in dist.items() if g not in kept)
    if other > 0:
        kept["<other>"] = other
    return kept


def run_spot_check(
    model: torch.nn.Module,
    tokenizer: Any,
    input_ids: torch.Tensor,
    extra: Mapping[str, Any] | None,
    served_answer: str,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seeds: list[int],
    eos_token_ids: list[int],
    one_token: bool | None = None,
    max_streams: int | None = None,
    equivalence: Callable[[str], str] | SetEquivalence | None = None,
) -> SpotCheckResult:
    """Self-consistency of ``served_answer`` for one prompt (``input_ids`` ends where the answer starts).

    ``equivalence`` maps an answer to its group (for example a SynPOPE task's
    :func:`monitor.synpope.judges.answer_key`); by default sampled answers group by their content
    words (:func:`~monitor.spotcheck.answers.content_words`). A :class:`SetEquivalence` (the
    embedding model of ``spotcheck.equivalence.kind: embedding``) groups the served and sampled
    answers together, its compute added to ``compute_seconds``. One-token answers keep the exact
    first-token distribution over normalised tokens.
    """
    if one_token is None:
        one_token = is_one_token_answer(tokenizer, served_answer)
    served = normalize_answer(served_answer)
    if one_token:
        pre = prefill(model, input_ids, extra)
        dist = exact_group_distribution(pre.logits, tokenizer, temperature)
        stats = stats_from_distribution(served, dist)
        stats = GroupStats(**{**stats.__dict__, "groups": _compact(dist, served)})
        return SpotCheckResult(one_token=True, k=0, stats=stats, answers=[], compute_seconds=pre.seconds)
    out = sample_shared_prefill(
        model, input_ids, extra, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
        seeds=seeds, eos_token_ids=eos_token_ids, max_streams=max_streams,
    )  # fmt: skip
    answers = tokenizer.batch_decode(out.tokens, skip_special_tokens=True)
    extra_seconds = 0.0
    if isinstance(equivalence, SetEquivalence):
        key = equivalence.grouping([served_answer, *answers])
        extra_seconds = float(equivalence.last_seconds)
    else:
        key = equivalence or content_words
    stats = group_stats(served_answer, answers, key=key)
    return SpotCheckResult(
        one_token=False,
        k=k,
        stats=stats,
        answers=[a.strip() for a in answers],
        compute_seconds=out.compute_seconds + extra_seconds,
        oom_splits=out.oom_splits,
        support=word_support(served_answer, answers),
    )
