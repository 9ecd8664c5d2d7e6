"""Decode the K streams over a static KV cache, optionally through ``torch.compile`` (CUDA graphs).

On a GPU the dynamic-cache loop is bound by per-token Python and kernel-launch overhead
(~30 ms a token for a 7B LLaVA), not by memory bandwidth. A static cache gives every decode step
the same shapes and buffer addresses, so ``torch.compile(mode="reduce-overhead")`` can replay the
whole step as one CUDA graph. The prefill still runs once at batch 1 (uncompiled: its shape changes
with every prompt); its keys and values are copied into the K rows of a pooled static cache whose
length is rounded up to a bucket, so different prompt lengths re-use one compiled graph.

Streams that finished keep decoding padding (static shapes) and are ignored; the loop ends when
all have finished. The interface equals :func:`monitor.spotcheck.sampler.decode_streams`, so an
instance plugs into ``sample_shared_prefill(decode=...)``. The eager path is tested on CPU against
the dynamic cache; the compiled path needs CUDA (its test is marked ``gpu``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from monitor.spotcheck.sampler import Prefill, _draw, cache_kwarg

__all__ = ["StaticDecoder", "CACHE_BUCKET"]

log = logging.getLogger(__name__)

CACHE_BUCKET = 256  # static cache lengths are rounded up to this, bounding the number of compiled graphs


class StaticDecoder:
    """Callable like ``decode_streams``; keeps one static cache per (streams, length bucket)."""

    def __init__(self, model: torch.nn.Module, *, compile: bool = True, bucket: int = CACHE_BUCKET) -> None:
        self.model = model
        self.bucket = bucket
        self._kw = cache_kwarg(model)
        self._caches: dict[tuple[int, int], Any] = {}
        self.forward = model.__call__
        if compile:
            from transformers.generation.configuration_utils import CompileConfig

            self.forward = model.get_compiled_call(CompileConfig(fullgraph=False, mode="reduce-overhead"))

    def _cache(self, pre: Prefill, n: int, max_new_tokens: int) -> Any:
        from transformers import StaticCache

        need = pre.length + max_new_tokens
        length = -(-need // self.bucket) * self.bucket
        key = (n, length)
        cache = self._caches.get(key)
        if cache is None:
            cache = StaticCache(config=self.model.config, max_cache_len=length)
            first = pre.cache.layers[0]
            cache.early_initialization(
                batch_size=n,
                num_heads=[lay.keys.shape[1] for lay in pre.cache.layers],
                head_dim=[lay.keys.shape[-1] for lay in pre.cache.layers],
                dtype=first.keys.dtype,
                device=first.keys.device,
            )
            self._caches[key] = cache
        for dst, src in zip(cache.layers, pre.cache.layers):
            # masked slots get zero attention weight; zeroing them keeps stale NaN/inf from a
            # previous prompt out of 0 * x
            dst.keys[:, :, pre.length :].zero_()
            dst.values[:, :, pre.length :].zero_()
            dst.keys[:, :, : pre.length].copy_(src.keys.expand(n, -1, -1, -1))
            dst.values[:, :, : pre.length].copy_(src.values.expand(n, -1, -1, -1))
            dst.cumulative_length.fill_(pre.length)
        return cache

    @torch.inference_mode()
    def __call__(
        self,
        model: torch.nn.Module,
        pre: Prefill,
        generators: Sequence[torch.Generator],
        *,
        temperature: float,
        max_new_tokens: int,
        eos_token_ids: Sequence[int] = (),
        min_new_tokens: int = 0,
        record_logits: bool = False,
    ) -> tuple[list[list[int]], list[bool], list[torch.Tensor] | None]:
        if model is not self.model:
            raise ValueError("StaticDecoder was built for another model")
        n = len(generators)
        device = pre.logits.device
        eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=device)
        cache = self._cache(pre, n, max_new_tokens)
        tokens: list[list[int]] = [[] for _ in range(n)]
        finished = [False] * n
        logs: list[list[torch.Tensor]] | None = [[] for _ in range(n)] if record_logits else None
        logits = pre.logits.unsqueeze(0).expand(n, -1)
        for step in range(max_new_tokens):
            scores = logits
            if step < min_new_tokens and eos.numel():
                scores = logits.clone()
                scores[:, eos] = float("-inf")
            nxt = _draw(scores, temperature, generators)
            done = torch.isin(nxt, eos).tolist() if eos.numel() else [False] * n
            for s, (tok, d) in enumerate(zip(nxt.tolist(), done)):
                if finished[s]:
                    continue
                if logs is not None:
                    logs[s].append(logits[s].detach().float().cpu())
                if d:
                    finished[s] = True
                else:
                    tokens[s].append(tok)
            if step == max_new_tokens - 1 or all(finished):
                break
            out = self.forward(input_ids=nxt.unsqueeze(1), use_cache=True, **{self._kw: cache})
            # CUDA-graph outputs live in buffers the next replay overwrites: copy them out
            logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)
        step_logits = [torch.stack(x) if x else torch.empty(0) for x in logs] if logs is not None else None
        return tokens, finished, step_logits
