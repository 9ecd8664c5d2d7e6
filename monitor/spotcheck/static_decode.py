"""Decode the K streams over a static KV cache, optionally through ``torch.compile`` (CUDA graphs).

On a GPU the dynamic-cache loop is bound by per-token Python and kernel-launch overhead
(~30 ms a token for a 7B LLaVA), not by memory bandwidth. A static cache gives every decode step
the same shapes and buffer addresses, so ``torch.compile(mode="reduce-overhead")`` can replay the
whole step as one CUDA graph. The prefill still runs once at batch 1 (uncompiled: its shape changes
with every prompt); its keys and values are copied into the K rows of a pooled static cache whose
length is rounded up to a bucket, so different prompt lengths re-use one compiled graph.

Streams that finished keep decoding padding (static shapes) and are ignored; the loop ends when
all have finished. An instance is a :class:`monitor.spotcheck.sampler.Decoder`, like
:func:`~monitor.spotcheck.sampler.decode_streams`, so it plugs into
``sample_shared_prefill(decode=...)``. The eager path is tested on CPU against the dynamic cache;
the compiled path needs CUDA (its test is marked ``gpu``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from monitor.spotcheck.sampler import DecodeParams, Decoded, Prefill, cache_kwarg, eos_tensor, next_tokens, stacked

__all__ = ["StaticDecoder", "CACHE_BUCKET"]

log = logging.getLogger(__name__)

CACHE_BUCKET = 256  # static cache lengths are rounded up to this, bounding the number of compiled graphs


class StaticDecoder:
    """A :class:`~monitor.spotcheck.sampler.Decoder`; keeps one static cache per (streams, length bucket)."""

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
    def __call__(self, model: torch.nn.Module, pre: Prefill, generators: Sequence[torch.Generator],
                 params: DecodeParams) -> Decoded:
        if model is not self.model:
            raise ValueError("StaticDecoder was built for another model")
        n = len(generators)
        eos = eos_tensor(params, pre.logits.device)
        cache = self._cache(pre, n, params.max_new_tokens)
        tokens: list[list[int]] = [[] for _ in range(n)]
        finished = [False] * n
        logs: list[list[torch.Tensor]] | None = [[] for _ in range(n)] if params.record_logits else None
        logits = pre.logits.unsqueeze(0).expand(n, -1)
        for step in range(params.max_new_tokens):
            nxt, done = next_tokens(logits, step, eos, params, generators)
            for s, (tok, d) in enumerate(zip(nxt.tolist(), done.tolist())):
                if finished[s]:
                    continue
                if logs is not None:
                    logs[s].append(logits[s].detach().float().cpu())
                if d:
                    finished[s] = True
                else:
                    tokens[s].append(tok)
            if step == params.max_new_tokens - 1 or all(finished):
                break
            out = self.forward(input_ids=nxt.unsqueeze(1), use_cache=True, **{self._kw: cache})
            # CUDA-graph outputs live in buffers the next replay overwrites: copy them out
            logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)
        return tokens, finished, stacked(logs)
