"""Hidden-state extraction: batched, length-bucketed forward passes and pooling.

One pass gives, per sample, the pooled hidden states at the requested layers and the free
signals the pass can see: answer-token probability (needs the LM head, so only a full pass with
``logits=True``) and attention sharpness over the image tokens (the attention of the last prompt
token at the last computed layer, so at the probe layer when the pass stops there).

Poolings (:data:`monitor.probe.head.POOLINGS`) turn the kept positions into one feature vector per
sample and layer; ``answer_stats`` also reads layer 0 (captured in the same pass) and
``answer_stats_lp`` the answer tokens' log-probabilities, so it needs ``logits=True``
(:func:`probe_pass_args` gives a probe's pass).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from monitor.probe.head import EMBEDDING_POOLINGS, LOGPROB_POOLINGS, POOLINGS

__all__ = ["PassOutput", "positions_needed", "pool", "buckets", "run_pass", "attention_sharpness",
           "answer_prob_from_logprobs", "needs_full_pass", "probe_pass_args"]

log = logging.getLogger(__name__)

DEFAULT_TOPK_SHARE = 0.1  # top-k mass counts the top 10% of image tokens (k = 2 of 16, 58 of 576)


@dataclass
class PassOutput:
    features: dict[str, np.ndarray]  # pooling -> [N, len(layers), H] float32
    layers: list[int]
    answer_prob: np.ndarray | None  # [N]: exp(mean log p) over the served answer tokens
    answer_logprobs: list[list[float]] | None  # per sample: log p of each served answer token (logits=True)
    attn_entropy: np.ndarray | None  # [N] nats, over image tokens (attention renormalised)
    attn_topk_mass: np.ndarray | None  # [N] share of image attention on the top-k image tokens
    attn_sharpness: np.ndarray | None  # [N] 1 - entropy / log(n_image): 1 = one token, 0 = uniform
    seconds: float  # wall time of the forward passes (not the encoding)
    image_embedding: np.ndarray | None = None  # [N, H]: projector output pooled over image tokens (NaN: no image)


def positions_needed(enc: Any) -> list[int]:
    """Token positions a pass keeps per sample: the last prompt token, then the answer tokens."""
    return [enc.prompt_last, *enc.answer_positions]


def needs_full_pass(pooling: str) -> bool:
    """Whether a probe with this pooling reads the LM head (the answer's log-probabilities), so its
    scoring pass runs every layer instead of stopping at the probe layer."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    return pooling in LOGPROB_POOLINGS


def probe_pass_args(layer: int, pooling: str) -> dict[str, Any]:
    """``stop_at`` and ``logits`` of :func:`run_pass` for a probe at ``layer`` with ``pooling``:
    early exit at the layer, or the full pass with the LM head where the pooling needs it."""
    full = needs_full_pass(pooling)
    return {"stop_at": None if full else layer, "logits": full}


def _token_stats(x: Any) -> Any:
    """[mean, elementwise min, elementwise max, last] of the answer rows of ``x`` ([1 + A, H] -> [4H])."""
    import torch

    ans = x[1:]
    return torch.cat([ans.mean(dim=0), ans.amin(dim=0), ans.amax(dim=0), ans[-1]])


def pool(kept: Any, pooling: str, *, embedded: Any = None, logprobs: Any = None) -> Any:
    """Pool one sample's hidden states at one layer, kept at :func:`positions_needed` ([1 + A, H]).

    ``answer_stats`` also needs ``embedded``, the same positions at layer 0 ([1 + A, H]);
    ``answer_stats_lp`` also ``logprobs``, the served answer tokens' log-probabilities ([A]).
    """
    import torch

    if pooling == "prompt_last":
        return kept[0]
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if kept.shape[0] < 2:
        raise ValueError(f"pooling {pooling!r} needs the served answer in the input, but the sample has none")
    if pooling == "answer":
        return kept[1]
    if pooling == "answer_mean":
        return kept[1:].mean(dim=0)
    if embedded is None or tuple(embedded.shape) != tuple(kept.shape):
        raise ValueError(f"pooling {pooling!r} needs the layer-0 states at the same positions "
                         f"({tuple(kept.shape)}), got {None if embedded is None else tuple(embedded.shape)}")
    stats = torch.cat([_token_stats(kept), _token_stats(embedded.to(kept.dtype))])
    if pooling == "answer_stats":
        return stats
    lps = None if logprobs is None else torch.as_tensor(logprobs, dtype=kept.dtype).reshape(-1)
    if lps is None or lps.numel() != kept.shape[0] - 1:
        raise ValueError(f"pooling {pooling!r} needs the log-probability of each of the {kept.shape[0] - 1} "
                         f"answer tokens (the full pass with logits=True), got "
                         f"{None if lps is None else lps.numel()}")
    return torch.cat([stats, lps.mean().reshape(1), lps.amin().reshape(1)])


def buckets(lengths: Sequence[int], batch_size: int, kinds: Sequence[Any] | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, stable), so padding stays small;
    samples of different ``kinds`` (e.g. with and without an image) never share a batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kinds = list(kinds) if kinds is not None else [0] * len(lengths)
    out: list[list[int]] = []
    for kind in dict.fromkeys(kinds):
        order = sorted((i for i in range(len(lengths)) if kinds[i] == kind), key=lambda i: lengths[i])
        out += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return out


def attention_sharpness(attn: Any, topk_share: float = DEFAULT_TOPK_SHARE) -> tuple[float, float, float]:
    """(entropy in nats, top-k mass, 1 - normalised entropy) of attention over image tokens."""
    a = np.asarray(attn, dtype=np.float64)
    n = a.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    total = a.sum()
    p = a / total if total > 0 else np.full(n, 1.0 / n)
    nz = p[p > 0]
    ent = float(-(nz * np.log(nz)).sum())
    k = max(1, math.ceil(topk_share * n))
    topk = float(np.sort(p)[::-1][:k].sum())
    sharp = 1.0 - ent / math.log(n) if n > 1 else 1.0
    return ent, topk, sharp


def answer_prob_from_logprobs(logprobs: Sequence[float]) -> float:
    """Geometric-mean probability of the served answer's tokens (its exact p for one token)."""
    lp = np.asarray(list(logprobs), dtype=np.float64)
    if not lp.size:
        return math.nan
    return float(np.exp(lp.mean()))


def run_pass(
    adapter: Any,
    encs: Sequence[Any],
    layers: Sequence[int],
    poolings: Sequence[str],
    *,
    stop_at: int | None,
    logits: bool = False,
    attentions: bool = False,
    batch_size: int = 16,
    topk_share: float = DEFAULT_TOPK_SHARE,
    progress: bool = False,
    desc: str = "extracting hidden states",
    image_embedding: bool = False,
) -> PassOutput:
    """Forward ``encs`` in length buckets; return pooled features and free signals in input order."""
    import torch
    from monitor.progress import progress as progress_bar

    n = len(encs)
    layers = list(layers)
    for p in poolings:
        if p not in POOLINGS:
            raise ValueError(f"unknown pooling {p!r}; expected one of {POOLINGS}")
    wants_lp = [p for p in poolings if p in LOGPROB_POOLINGS]
    if wants_lp and not logits:
        raise ValueError(f"pooling {wants_lp[0]!r} reads the answer tokens' log-probabilities: it needs the full "
                         f"pass with logits=True (see probe_pass_args)")
    # the embedding-augmented poolings also read layer 0, which the pass captures for free
    fwd_layers = sorted(set(layers) | ({0} if any(p in EMBEDDING_POOLINGS for p in poolings) else set()))
    feats: dict[str, np.ndarray | None] = {p: None for p in poolings}
    ans = np.full(n, np.nan) if logits else None
    token_lps: list[list[float]] | None = [[] for _ in range(n)] if logits else None
    ent = np.full(n, np.nan) if attentions else None
    topk = np.full(n, np.nan) if attentions else None
    sharp = np.full(n, np.nan) if attentions else None
    img_emb: np.ndarray | None = None
    spent = 0.0
    with progress_bar(n, desc, "sample", enabled=progress) as bar, torch.inference_mode():
        for idx in buckets([e.length for e in encs], batch_size, [tuple(sorted(e.extra)) for e in encs]):
            t0 = time.perf_counter()
            batch = [encs[i] for i in idx]
            extra = {"image_embedding": True} if image_embedding else {}
            out = adapter.forward(batch, layers=fwd_layers, stop_at=stop_at, attentions=attentions, logits=logits,
                                  positions=[positions_needed(e) for e in batch], **extra)
            spent += time.perf_counter() - t0
            for j, i in enumerate(idx):
                emb = out.hidden[0][j] if 0 in out.hidden else None
                lps = out.answer_logprobs[j] if out.answer_logprobs is not None else None
                for p in poolings:
                    vecs = torch.stack([pool(out.hidden[layer][j], p, embedded=emb, logprobs=lps) for layer in layers])
                    arr = feats[p]
                    if arr is None:
                        arr = feats[p] = np.empty((n, len(layers), vecs.shape[-1]), dtype=np.float32)
                    arr[i] = vecs.float().numpy()
                if ans is not None and token_lps is not None:
                    token_lps[i] = out.answer_logprobs[j].tolist()
                    ans[i] = answer_prob_from_logprobs(token_lps[i])
                if attentions:
                    ent[i], topk[i], sharp[i] = attention_sharpness(out.image_attention[j].float().numpy(), topk_share)
                if image_embedding and out.image_embedding is not None and out.image_embedding[j] is not None:
                    vec = out.image_embedding[j].float().numpy()
                    if img_emb is None:
                        img_emb = np.full((n, vec.shape[-1]), np.nan, dtype=np.float32)
                    img_emb[i] = vec
            bar.update(len(idx))
    return PassOutput(
        features={p: a for p, a in feats.items() if a is not None},
        layers=layers,
        answer_prob=ans,
        answer_logprobs=token_lps,
        attn_entropy=ent,
        attn_topk_mass=topk,
        attn_sharpness=sharp,
        seconds=spent,
        image_embedding=img_emb,
    )
