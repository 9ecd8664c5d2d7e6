"""Model inputs for one (image, prompt, answer) and right-padded batches of them.

The prompt goes through the model's own processor (chat template, image placeholder expansion);
the answer is appended as token ids (tokenised alone, no special tokens), which is how a served
answer follows the generation prompt, and avoids merges across the prompt/answer boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitor.adapter.families import FamilySpec, build_prompt_text

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["Encoded", "Batch", "encode", "collate"]


@dataclass
class Encoded:
    """One sample's model inputs; positions index ``input_ids``."""

    input_ids: torch.Tensor  # 1-D LongTensor: prompt (with image tokens) then answer tokens
    extra: dict[str, torch.Tensor]  # per-sample model kwargs, batched along dim 0 (pixel_values, image_grid_thw)
    image_mask: torch.Tensor  # bool 1-D: image-token positions
    prompt_last: int  # position whose next-token prediction is the first answer token
    answer_positions: list[int]  # positions of the answer tokens
    answer_ids: list[int]  # the answer's token ids
    token_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # per-token kwargs aligned with input_ids

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class Batch:
    kwargs: dict[str, Any]  # model(**kwargs)
    lengths: list[int]


def encode(
    spec: FamilySpec,
    processor: Any,
    image: Image.Image | None,
    prompt: str,
    answer: str | None = None,
    image_token: int | None = None,
) -> Encoded:
    import torch

    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if image is not None:
        image = image.convert("RGB")
    elif spec.family == "paligemma":
        raise ValueError("PaliGemma needs an image: its processor builds the prefix around one")
    text = build_prompt_text(spec, processor, prompt, image is not None)
    feats = processor(images=[image] if image is not None else None, text=[text], return_tensors="pt")
    prompt_ids = feats["input_ids"][0].long()
    answer_ids: list[int] = []
    if answer is not None:
        answer_ids = list(processor.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"])
        if answer.strip() and not answer_ids:
            raise ValueError(f"answer {answer!r} tokenises to nothing")
    n_prompt = int(prompt_ids.shape[0])
    input_ids = torch.cat([prompt_ids, torch.tensor(answer_ids, dtype=torch.long)])
    token_inputs: dict[str, torch.Tensor] = {}
    for name, answer_value in spec.token_inputs:
        if name in feats:
            prompt_part = feats[name][0]
            tail = torch.full((len(answer_ids),), answer_value, dtype=prompt_part.dtype)
            token_inputs[name] = torch.cat([prompt_part, tail])
    extra = {
        k: v
        for k, v in feats.items()
        if k not in ("input_ids", "attention_mask", "labels") and k not in token_inputs and v is not None
    }
    if image_token is not None:
        image_mask = input_ids == image_token
    else:
        image_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    return Encoded(
        input_ids=input_ids,
        extra=extra,
        image_mask=image_mask,
        prompt_last=n_prompt - 1,
        answer_positions=list(range(n_prompt, n_prompt + len(answer_ids))),
        answer_ids=answer_ids,
        token_inputs=token_inputs,
    )


def collate(spec: FamilySpec, encs: list[Encoded], pad_id: int, device: Any, dtype: Any = None) -> Batch:
    """Right-padded batch: with causal attention no real token sees the padding, so each
    sample's states equal its unbatched ones; PaliGemma's padding is typed as suffix."""
    import torch

    if not encs:
        raise ValueError("forward needs at least one encoded sample")
    lengths = [e.length for e in encs]
    width = max(lengths)
    ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : lengths[i]] = e.input_ids
        mask[i, : lengths[i]] = 1
    kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    pad_values = dict(spec.token_inputs)
    for name in encs[0].token_inputs:
        first = encs[0].token_inputs[name]
        t = torch.full((len(encs), width), pad_values.get(name, 0), dtype=first.dtype)
        for i, e in enumerate(encs):
            t[i, : lengths[i]] = e.token_inputs[name]
        kwargs[name] = t.to(device)
    keys = set(encs[0].extra)
    if any(set(e.extra) != keys for e in encs):
        raise ValueError("cannot batch samples with and without images together; split the batch")
    for name in keys:
        value = torch.cat([e.extra[name] for e in encs], dim=0).to(device)
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)  # pixel values follow the model's dtype (bf16 on GPU)
        kwargs[name] = value
    return Batch(kwargs=kwargs, lengths=lengths)
