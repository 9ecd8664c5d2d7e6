"""Span-level scores: which object a caption names is likely hallucinated.

A sample-level probe says "this caption is probably wrong"; an operator wants to know *which*
named object is the problem. For each object a caption names ("red circle"), the span features
are the hidden states at that object's answer tokens (mean over the span, at one layer) and the
log-probability of those tokens, both from the one full pass. A logistic head on them, trained on
captions whose truth is known (its regularisation chosen by cross-validation grouped by caption),
gives p(the named object is present). :func:`span_experiment` measures it on held-out
captions beside two baselines that need no new head: the sample-level probe's score given to every
object of its caption, and the served tokens' own probability over the span (geometric mean).

Token spans come from the decoded text, so any tokenizer works: token ``k`` covers the characters
that decoding ``ids[: k + 1]`` adds to decoding ``ids[:k]``; an object's tokens are those whose
characters overlap its mention.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from monitor.synpope.world import COLOURS, SHAPES

__all__ = ["MENTION", "ObjectSpan", "object_spans", "SpanRows", "span_rows", "object_support", "span_experiment"]

log = logging.getLogger(__name__)

# "red circle", "Red circles", "crosses": a colour word, then a shape word (plural allowed)
MENTION = re.compile(r"\b(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")(?:e?s)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class ObjectSpan:
    name: str  # "red circle"
    tokens: tuple[int, ...]  # indices into the answer's tokens


def object_spans(tokenizer: Any, answer_ids: Sequence[int]) -> list[ObjectSpan]:
    """The objects the decoded answer names, each with the answer tokens that spell it."""
    ids = [int(i) for i in answer_ids]
    ends: list[int] = []
    for k in range(len(ids)):
        ends.append(len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    starts = [0, *ends[:-1]]
    out: list[ObjectSpan] = []
    for m in MENTION.finditer(text):
        toks = tuple(k for k, (a, b) in enumerate(zip(starts, ends)) if a < m.end() and b > m.start() and b > a)
        if toks:
            out.append(ObjectSpan(f"{m.group(1).lower()} {m.group(2).lower()}", toks))
    return out


@dataclass
class SpanRows:
    """One row per named object: its features, whether it is present, and where it came from."""

    features: np.ndarray  # [R, H] mean hidden state over the object's tokens
    token_prob: np.ndarray  # [R] geometric-mean probability of the object's served tokens
    present: np.ndarray  # [R] bool: the object is in the scene
    sample: np.ndarray  # [R] index of the sample (caption) it was named in
    names: list[str]


def span_rows(adapter: Any, samples: Sequence[Any], layer: int, *, batch_size: int = 32) -> SpanRows:
    """Span features at ``layer`` and token probabilities for every object each caption names.

    ``samples`` are :class:`monitor.probe.samples.ProbeSample` with answers and
    ``meta["objects"]`` (the scene). One full pass per batch (the LM head gives the token
    probabilities); the hidden states are those the probe would read at ``layer``.
    """
    import torch

    from monitor.probe.extract import buckets, positions_needed
    from monitor.probe.samples import open_image

    encs = [adapter.encode(open_image(s.image), s.prompt, s.answer) for s in samples]
    feats, probs, present, owner, names = [], [], [], [], []
    with torch.inference_mode():
        for idx in buckets([e.length for e in encs], batch_size, [tuple(sorted(e.extra)) for e in encs]):
            batch = [encs[i] for i in idx]
            out = adapter.forward(batch, layers=[layer], stop_at=None, logits=True,
                                  positions=[positions_needed(e) for e in batch])
            for j, i in enumerate(idx):
                scene = set(samples[i].meta.get("objects") or [])
                hidden = out.hidden[layer][j][1:].float()  # answer tokens (row 0 is the last prompt token)
                lps = out.answer_logprobs[j].float()
                for span in object_spans(adapter.tokenizer, encs[i].answer_ids):
                    t = list(span.tokens)
                    feats.append(hidden[t].mean(dim=0).numpy())
                    probs.append(float(torch.exp(lps[t].mean())))
                    present.append(span.name in scene)
                    owner.append(i)
                    names.append(span.name)
    h = adapter.model.config.get_text_config().hidden_size
    return SpanRows(
        features=np.asarray(feats, dtype=np.float32).reshape(-1, h),
        token_prob=np.asarray(probs, dtype=np.float64),
        present=np.asarray(present, dtype=bool),
        sample=np.asarray(owner, dtype=np.int64),
        names=names,
    )


SPAN_C_GRID = (0.01, 0.1, 1.0, 10.0)


def _design(rows: SpanRows) -> np.ndarray:
    return np.column_stack([rows.features, np.log(np.clip(rows.token_prob, 1e-12, 1.0))])


def object_support(name: str, sampled: Sequence[str]) -> float:
    """Share of the sampled answers that name ``name`` (SelfCheckGPT-style support)."""
    from monitor.synpope.judges import mentioned_objects

    if not sampled:
        raise ValueError("object support needs at least one sampled answer")
    return sum(name in mentioned_objects(a) for a in sampled) / len(sampled)


def span_experiment(adapter: Any, train: Sequence[Any], test: Sequence[Any], layer: int,
                    sample_scores: np.ndarray, *, sampled: Sequence[Sequence[str]] | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Train the span head on ``train`` captions; AUROC for "this named object is present" on
    ``test`` for the span head, the per-object token probability and the sample-level score
    (``sample_scores``, one per test sample, given to each object of that caption). With
    ``sampled`` (K sampled answers per test sample, from the spot check), also each object's
    support: the share of the K answers that name it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from monitor.calibration.metrics import paired_auroc_delta, signal_metrics

    tr = span_rows(adapter, train, layer)
    te = span_rows(adapter, test, layer)
    if tr.present.all() or not tr.present.any():
        raise ValueError("span training needs named objects both present and absent")
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                          {"logisticregression__C": list(SPAN_C_GRID)}, scoring="roc_auc", cv=GroupKFold(n_splits=5))
    search.fit(_design(tr), tr.present, groups=tr.sample)
    span = search.predict_proba(_design(te))[:, 1]
    sample_level = np.asarray(sample_scores, dtype=np.float64)[te.sample]
    signals = {
        "span_probe": signal_metrics(span, te.present, n_boot=n_boot, seed=seed).as_dict(),
        "span_token_prob": signal_metrics(te.token_prob, te.present, n_boot=n_boot, seed=seed).as_dict(),
        "sample_probe": signal_metrics(sample_level, te.present, n_boot=n_boot, seed=seed).as_dict(),
    }
    if sampled is not None:
        support = np.array([object_support(n, sampled[i]) for n, i in zip(te.names, te.sample)])
        signals["span_support"] = signal_metrics(support, te.present, n_boot=n_boot, seed=seed).as_dict()
        signals["span_support"]["k"] = len(sampled[0]) if len(sampled) else 0
    d_sample, ci_sample = paired_auroc_delta(span, sample_level, te.present, n_boot=n_boot, seed=seed)
    d_tok, ci_tok = paired_auroc_delta(span, te.token_prob, te.present, n_boot=n_boot, seed=seed)
    return {
        "layer": layer,
        "features": "mean hidden state over the object's tokens + their log-probability",
        "c": float(search.best_params_["logisticregression__C"]),
        "train": {"captions": len(train), "objects": int(len(tr.present)), "absent": int((~tr.present).sum())},
        "test": {"captions": len(test), "objects": int(len(te.present)), "absent": int((~te.present).sum())},
        "signals": signals,
        "span_minus_sample": {"delta_auroc": d_sample, "ci": list(ci_sample)},
        "span_minus_token_prob": {"delta_auroc": d_tok, "ci": list(ci_tok)},
    }
