"""Greedy and sampled decoding with per-token log-probabilities (what an OpenAI server returns)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from monitor.adapter.encoding import Batch

__all__ = ["Generation", "run_generate", "eos_ids"]

log = logging.getLogger(__name__)


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # generated tokens, end-of-sequence excluded
    token_logprobs: list[float]  # log p of each generated token under the model (before temperature)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)  # per token: top (id, log p)
    finish_reason: str = "length"  # "stop" (end-of-sequence) or "length" (max_new_tokens reached)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def run_generate(
    model: Any,
    tokenizer: Any,
    batch: Batch,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_logprobs: int = 0,
    pad_id: int = 0,
) -> Generation:
    """One sequence for a batch of one prompt; greedy when ``temperature == 0``."""
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    sample = temperature > 0
    opts: dict[str, Any] = {"do_sample": sample}
    if sample:
        # top_k=0 disables a checkpoint's default top-k: the caller's temperature/top_p rule
        opts.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    else:
        opts.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = model.generate(
            **batch.kwargs,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=pad_id,
            **opts,
        )
    prompt_len = batch.kwargs["input_ids"].shape[1]
    seq = out.sequences[0, prompt_len:].tolist()
    stops = eos_ids(model, tokenizer)
    ids: list[int] = []
    lps: list[float] = []
    tops: list[list[tuple[int, float]]] = []
    finish = "length"
    for step, tok in enumerate(seq):
        if tok in stops:
            finish = "stop"
            break
        lp = torch.log_softmax(out.logits[step][0].float(), dim=-1)
        ids.append(int(tok))
        lps.append(float(lp[tok]))
        if top_logprobs:
            vals, idx = torch.topk(lp, k=min(top_logprobs, lp.shape[-1]))
            tops.append([(int(i), float(v)) for i, v in zip(idx.tolist(), vals.tolist())])
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Generation(text=text, token_ids=ids, token_logprobs=lps, top_logprobs=tops, finish_reason=finish)
