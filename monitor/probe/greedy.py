"""Batched greedy answers for labelling training and comparison data.

``adapter.generate`` answers one prompt at a time through HF ``generate``; labelling thousands of
SynPOPE questions that way dominates ``probe train``. Yes/no answers are one or two tokens, so a
batched loop that re-runs the (right-padded) batch with the tokens so far and takes each sample's
argmax at its last position costs a few passes per batch instead of one ``generate`` per sample.
It gives the same tokens as greedy ``generate`` (a test checks it on the fixture).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

__all__ = ["greedy_answers"]

log = logging.getLogger(__name__)


def _extend(spec: Any, enc: Any, new_ids: list[int]) -> Any:
    import torch

    if not new_ids:
        return enc
    tail = torch.tensor(new_ids, dtype=torch.long)
    token_inputs = dict(enc.token_inputs)
    answer_values = dict(spec.token_inputs)
    for name, t in enc.token_inputs.items():
        token_inputs[name] = torch.cat([t, torch.full((len(new_ids),), answer_values.get(name, 0), dtype=t.dtype)])
    image_mask = torch.cat([enc.image_mask, torch.zeros(len(new_ids), dtype=torch.bool)])
    return dataclasses.replace(enc, input_ids=torch.cat([enc.input_ids, tail]), token_inputs=token_inputs,
                               image_mask=image_mask)


def greedy_answers(adapter: Any, encs: Sequence[Any], *, max_new_tokens: int = 8, batch_size: int = 32,
                   progress: bool = False) -> list[str]:
    """Greedy answer text for each prompt-only encoding (``adapter.encode(image, prompt)``)."""
    import torch

    from monitor.adapter.encoding import collate
    from monitor.adapter.generation import eos_ids
    from monitor.probe.extract import buckets
    from monitor.progress import progress as progress_bar

    stops = eos_ids(adapter.model, adapter.tokenizer)
    out: list[list[int]] = [[] for _ in encs]
    with progress_bar(len(encs), "greedy answers", "sample", enabled=progress) as bar:
        for idx in buckets([e.length for e in encs], batch_size, [tuple(sorted(e.extra)) for e in encs]):
            active = list(idx)
            for _ in range(max_new_tokens):
                batch_encs = [_extend(adapter.spec, encs[i], out[i]) for i in active]
                batch = collate(adapter.spec, batch_encs, adapter.pad_id, adapter.device, adapter.dtype)
                with adapter.lock, torch.inference_mode():
                    logits = adapter.model(**batch.kwargs, use_cache=False).logits
                last = torch.as_tensor([n - 1 for n in batch.lengths], device=logits.device)
                nxt = logits[torch.arange(len(active), device=logits.device), last].float().argmax(-1).tolist()
                still = []
                for i, tok in zip(active, nxt):
                    if tok in stops:
                        continue
                    out[i].append(int(tok))
                    still.append(i)
                active = still
                if not active:
                    break
            bar.update(len(idx))
    return [adapter.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]
