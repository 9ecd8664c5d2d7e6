"""The daemon's probe scorer: early-exit forward, ONNX head, free signals, stale-probe guard.

Per batch of samples of one served model: encode with the adapter, bucket by length, run the
decoder only up to the probe layer (``adapter.forward(..., stop_at=layer)``: no later layers, no
LM head), pool the probe layer's hidden state, and run the head in ONNX Runtime. Repeated images
skip the vision tower (:mod:`monitor.probe.image_cache`, ``scoring.image_cache_size`` entries).

Free signals, decided here because the early-exit pass cannot see the LM head:
- attention sharpness (entropy, top-k mass over image tokens) comes from the same pass: the
  attention of the last prompt token at the last computed layer, i.e. the probe layer
  (``scoring.attention_signals``; needs eager attention);
- answer probability comes from the log-probs the proxy captured with the response when the
  sample carries them (``meta.answer_logprobs``: list of floats, or OpenAI ``meta.logprobs``
  with ``content[].logprob``); otherwise it is left empty, unless ``scoring.full_pass`` is on,
  which runs every layer and the LM head (the answer tokens only) and reads it exactly, at the
  price of the full pass (attention then comes from the last layer). A probe whose pooling reads the
  answer's log-probabilities (``answer_stats_lp``) always runs that full pass, and so reads the
  answer probability exactly too.

Served-model check (:mod:`monitor.probe.served_check`): for ``recompute_share`` of the samples that
carry captured log-probabilities (all of them with ``full_pass``, where it is free) the
:class:`~monitor.probe.score_result.ScoreResult` also holds ``recomputed_logprobs``, the monitor's
own log-probabilities of the served answer's tokens from a full pass, to compare with the served ones.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from collectors.exchange import token_logprobs
from monitor.probe.artifact import ProbeArtifact
from monitor.probe.extract import DEFAULT_TOPK_SHARE, answer_prob_from_logprobs, needs_full_pass, run_pass
from monitor.probe.image_cache import SUPPORTED_FAMILIES, ImageFeatureCache
from monitor.probe.score_result import ScoreResult
from monitor.probe.stale import check_fresh

__all__ = ["ScoreItem", "ScorerOptions", "ProbeScorer", "captured_logprobs", "captured_answer_prob"]

log = logging.getLogger(__name__)


class ScoreItem(Protocol):
    """What the scorer reads from a sample (``monitor.daemon.scoring.ScoreInput`` fits)."""

    prompt: str
    answer: str
    image: bytes | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class ScorerOptions:
    batch_size: int = 16  # samples per forward pass (after length bucketing)
    head_backend: str = "onnx"  # onnx | torch
    full_pass: bool = False  # run every layer + LM head to read the answer probability
    attention_signals: bool = True  # attention entropy / top-k mass over image tokens
    topk_share: float = DEFAULT_TOPK_SHARE
    device: str = "auto"  # for the ONNX head
    image_cache_size: int = 512  # image-feature cache entries (0: off); LLaVA and PaliGemma
    vision_embedding: bool = True  # hand the pooled image-token input of the pass to the input-drift features
    recompute_share: float = 0.0  # samples with captured logprobs whose answer logprobs are recomputed (served check)


def captured_logprobs(meta: dict[str, Any] | None) -> list[float] | None:
    """The served answer tokens' log-probabilities captured with the response, when the sample has them."""
    if not meta:
        return None
    lps = meta.get("answer_logprobs")
    if lps is None:  # an OpenAI logprobs object stored as is (e.g. by `vlmwatch ingest`)
        lps = token_logprobs(meta.get("logprobs"))
    if not isinstance(lps, list) or not lps:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in lps):
        return None
    return [float(v) for v in lps]


def captured_answer_prob(meta: dict[str, Any] | None) -> float | None:
    """Answer probability from log-probs captured with the response, when the sample has them."""
    lps = captured_logprobs(meta)
    return None if lps is None else answer_prob_from_logprobs(lps)


class ProbeScorer:
    """Scores samples of one served model with one probe version; refuses a stale probe."""

    def __init__(
        self,
        adapter: Any,
        artifact: ProbeArtifact,
        *,
        served_name: str,
        probe_version_id: int = 0,
        options: ScorerOptions = ScorerOptions(),
        current_fingerprint: Callable[[], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        meta = artifact.meta
        check_fresh(served_name, meta.version, meta.model_fingerprint, adapter.fingerprint)
        if meta.layer > adapter.num_layers:
            raise ValueError(f"probe layer {meta.layer} exceeds the model's {adapter.num_layers} layers")
        if options.head_backend not in ("onnx", "torch"):
            raise ValueError(f"head_backend must be onnx or torch, got {options.head_backend!r}")
        self.adapter = adapter
        self.artifact = artifact
        self.served_name = served_name
        self.probe_version_id = probe_version_id
        self.options = options
        self.layer = meta.layer
        self.pooling = meta.pooling
        # re-checked before every batch: a redeploy into the same folder must stop scoring
        self._current_fingerprint = current_fingerprint or (lambda: adapter.fingerprint)
        self._head = self._make_head()
        self._rng = rng or random.Random()  # draws the samples whose answer is recomputed
        self.image_cache = None
        if options.image_cache_size > 0 and adapter.family in SUPPORTED_FAMILIES:
            self.image_cache = ImageFeatureCache(adapter.model, adapter.family, options.image_cache_size)

    def _make_head(self) -> Any:
        if self.options.head_backend == "onnx":
            from monitor.probe.runner import OnnxHeadRunner

            return OnnxHeadRunner(self.artifact.onnx_path, self.artifact.head, device=self.options.device)
        import torch

        from monitor.probe.head import torch_head

        module = torch_head(self.artifact.head)
        head = self.artifact.head

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return head.calibrate(module(torch.from_numpy(x))[:, 0].numpy())

        return run

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise :class:`ProbeStaleError` if ``fingerprint`` (the served model now) is not the probe's."""
        check_fresh(self.served_name, self.artifact.meta.version, self.artifact.meta.model_fingerprint, fingerprint)

    def encode(self, items: Sequence[ScoreItem]) -> list[Any]:
        from PIL import Image

        encs = []
        for it in items:
            image = None
            if it.image is not None:
                with Image.open(io.BytesIO(it.image)) as im:
                    image = im.convert("RGB")
            encs.append(self.adapter.encode(image, it.prompt, it.answer))
        return encs

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One :class:`ScoreResult` per item, in order (``recomputed_logprobs`` only for the drawn ones)."""
        if not items:
            return []
        self.check_fingerprint(self._current_fingerprint())
        t0 = time.perf_counter()
        encs = self.encode(items)
        opts = self.options
        # a pooling that reads the answer's log-probabilities (answer_stats_lp) needs the LM head: the full pass
        full = opts.full_pass or needs_full_pass(self.pooling)
        # the adapter may be shared with the spot checks: hold its lock while the cache patches the model
        with self.adapter.lock, self.image_cache.active() if self.image_cache is not None else contextlib.nullcontext():
            out = run_pass(
                self.adapter, encs, [self.layer], [self.pooling],
                stop_at=None if full else self.layer,
                logits=full,
                attentions=opts.attention_signals and self.layer > 0,
                batch_size=opts.batch_size,
                topk_share=opts.topk_share,
                image_embedding=opts.vision_embedding,
            )
        p = self._head(out.features[self.pooling][:, 0])
        recomputed = self._recompute(items, encs, out)
        per_ms = 1000.0 * (time.perf_counter() - t0) / len(items)
        results = []
        for i, it in enumerate(items):
            ans = captured_answer_prob(getattr(it, "meta", None))
            if ans is None and out.answer_prob is not None and math.isfinite(out.answer_prob[i]):
                ans = float(out.answer_prob[i])
            results.append(ScoreResult(
                p_correct=float(p[i]),
                answer_prob=ans,
                attn_entropy=_opt(out.attn_entropy, i),
                attn_topk_mass=_opt(out.attn_topk_mass, i),
                latency_ms=per_ms,
                probe_version_id=self.probe_version_id,
                vision_embedding=_row(out.image_embedding, i),
                recomputed_logprobs=recomputed.get(i),
            ))
        return results

    def _recompute(self, items: Sequence[ScoreItem], encs: list[Any], out: Any) -> dict[int, list[float]]:
        """The monitor's own log-probabilities of the served answer for the drawn samples with captured ones."""
        opts = self.options
        drawn = [i for i, it in enumerate(items) if captured_logprobs(getattr(it, "meta", None)) is not None
                 and (out.answer_logprobs is not None or self._rng.random() < opts.recompute_share)]
        if out.answer_logprobs is not None:  # the pass was the full one: the recomputation is free
            return {i: out.answer_logprobs[i] for i in drawn}
        if not drawn:
            return {}
        with self.adapter.lock, self.image_cache.active() if self.image_cache is not None else contextlib.nullcontext():
            full = run_pass(self.adapter, [encs[i] for i in drawn], [self.layer], [self.pooling], stop_at=None,
                            logits=True, batch_size=opts.batch_size)
        return dict(zip(drawn, full.answer_logprobs or []))


def _row(arr: np.ndarray | None, i: int) -> np.ndarray | None:
    if arr is None or not np.all(np.isfinite(arr[i])):
        return None
    return arr[i]


def _opt(arr: np.ndarray | None, i: int) -> float | None:
    if arr is None or not math.isfinite(arr[i]):
        return None
    return float(arr[i])
