"""One batched forward pass that captures chosen layers and stops early.

Forward hooks on the decoder layers copy the hidden states the caller asked for; a last hook on
the deepest layer needed raises :class:`_StopForward`, so later layers and the LM head never run.
The logits the caller needs (next-token predictions at the prompt's last position and along the
answer) are computed here from the last layer's output with the model's own final norm and LM
head, at those positions only: no ``[batch, seq, vocab]`` tensor is ever built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from monitor.adapter.encoding import Batch, Encoded
from monitor.adapter.families import decoder_layers, final_norm

if TYPE_CHECKING:
    import torch

__all__ = ["ForwardOutput", "run_forward", "check_layer_request"]

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by the stop hook; carries nothing: the captures live in the hooks' closure."""


@dataclass
class ForwardOutput:
    # layer -> per sample Tensor[T_i, H] (or [len(positions[i]), H]) on CPU, float32
    hidden: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    answer_logprobs: list[torch.Tensor] | None = None  # per sample Tensor[A_i]: log p of each answer token
    first_token_probs: list[dict[str, float]] | None = None  # per sample: answer word -> p(its first token)
    image_attention: list[torch.Tensor] | None = None  # per sample Tensor[n_image_tokens]
    attention_layer: int | None = None  # the layer (1..L) whose attention image_attention holds
    # per sample Tensor[H] (None without image tokens): the decoder's input (the vision projector's
    # output) averaged over the image-token positions; asked for with image_embedding=True
    image_embedding: list[torch.Tensor | None] | None = None


def check_layer_request(
    num_layers: int, layers: Sequence[int], stop_at: int | None, attentions: bool, logits: bool
) -> int:
    """Validate a request; return the last layer (1..L, or 0 for embeddings only) that must run."""
    for l in layers:
        if not isinstance(l, int) or not 0 <= l <= num_layers:
            raise ValueError(f"layer {l!r} is out of range: layers are 0 (embeddings) .. {num_layers}")
    if stop_at is not None:
        if not isinstance(stop_at, int) or not 0 <= stop_at <= num_layers:
            raise ValueError(f"stop_at={stop_at!r} is out of range 0..{num_layers}")
        deeper = [l for l in layers if l > stop_at]
        if deeper:
            raise ValueError(f"layers {deeper} lie beyond stop_at={stop_at}")
        if logits and stop_at < num_layers:
            raise ValueError(f"logits need the full pass; stop_at={stop_at} < {num_layers} layers")
    last = num_layers if stop_at is None else stop_at
    if attentions and last == 0:
        raise ValueError("attentions need at least one decoder layer; stop_at=0 runs only the embeddings")
    return last


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def run_forward(
    model: Any,
    batch: Batch,
    encs: list[Encoded],
    layers: Sequence[int],
    last: int,
    attentions: bool,
    logits: bool,
    first_token_ids: dict[str, list[int]],
    positions: Sequence[Sequence[int]] | None = None,
    image_embedding: bool = False,
) -> ForwardOutput:
    import torch

    mods = decoder_layers(model)
    num_layers = len(mods)
    captured: dict[int, torch.Tensor] = {}
    attn_store: dict[str, torch.Tensor] = {}
    want = sorted(set(layers) | ({num_layers} if logits else set()))
    handles = []

    def pre_capture(_mod: Any, args: tuple, kwargs: dict) -> None:
        captured[0] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def capture(index: int):
        def hook(_mod: Any, _args: tuple, output: Any) -> None:
            captured[index] = _first(output)

        return hook

    def capture_attention(_mod: Any, _args: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError(
                "the model returned no attention weights: load it with attn_implementation='eager' "
                "(SDPA and flash attention do not return them)"
            )
        attn_store["w"] = weights

    def stop(*_: Any) -> None:
        raise _StopForward

    try:
        if image_embedding and 0 not in want:
            handles.append(mods[0].register_forward_pre_hook(pre_capture, with_kwargs=True))
        for l in want:
            if l == 0:
                handles.append(mods[0].register_forward_pre_hook(pre_capture, with_kwargs=True))
            else:
                handles.append(mods[l - 1].register_forward_hook(capture(l)))
        if attentions:
            handles.append(mods[last - 1].self_attn.register_forward_hook(capture_attention))
        if last == 0:
            handles.append(mods[0].register_forward_pre_hook(stop))
        else:
            handles.append(mods[last - 1].register_forward_hook(stop))
        with torch.inference_mode():
            try:
                model(**batch.kwargs, use_cache=False)
                log.warning("forward finished without reaching the stop hook")
            except _StopForward:
                pass
            out = _collect(model, captured, attn_store, encs, batch, layers, last, logits, first_token_ids, positions)
            if image_embedding:
                out.image_embedding = _image_embedding(captured[0], encs, batch.lengths)
            return out
    finally:
        for h in handles:
            h.remove()


def _image_embedding(states: torch.Tensor, encs: list[Encoded], lengths: Sequence[int]) -> list[torch.Tensor | None]:
    import torch

    out: list[torch.Tensor | None] = []
    for i, (e, n) in enumerate(zip(encs, lengths)):
        pos = torch.nonzero(e.image_mask[:n], as_tuple=False).flatten().to(states.device)
        out.append(states[i, pos].float().mean(0).cpu() if pos.numel() else None)
    return out


def _collect(
    model: Any,
    captured: dict[int, torch.Tensor],
    attn_store: dict[str, torch.Tensor],
    encs: list[Encoded],
    batch: Batch,
    layers: Sequence[int],
    last: int,
    logits: bool,
    first_token_ids: dict[str, list[int]],
    positions: Sequence[Sequence[int]] | None,
) -> ForwardOutput:
    import torch

    num_layers = len(decoder_layers(model))
    norm = final_norm(model)
    out = ForwardOutput()
    missing = [l for l in layers if l not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} were not captured: the decoder did not run them")
    for l in sorted(set(layers)):
        states = captured[l]
        if l == num_layers:  # HF hidden_states[L] is after the final norm
            states = norm(states)
        per_sample = []
        for i, n in enumerate(batch.lengths):
            h = states[i, :n]
            if positions is not None:
                h = h[torch.as_tensor(list(positions[i]), dtype=torch.long, device=h.device)]
            per_sample.append(h.float().cpu())
        out.hidden[l] = per_sample
    if logits:
        out.answer_logprobs, out.first_token_probs = _answer_scores(model, norm, captured[num_layers], encs, first_token_ids)
    if "w" in attn_store:
        w = attn_store["w"]
        out.attention_layer = last
        out.image_attention = []
        for i, e in enumerate(encs):
            img_pos = torch.nonzero(e.image_mask, as_tuple=False).flatten().to(w.device)
            row = w[i, :, e.prompt_last, :]  # [heads, T]
            out.image_attention.append(row[:, img_pos].mean(0).float().cpu())
    return out


def _answer_scores(
    model: Any, norm: Any, last_raw: torch.Tensor, encs: list[Encoded], first_token_ids: dict[str, list[int]]
) -> tuple[list[torch.Tensor], list[dict[str, float]]]:
    import torch

    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    logprobs: list[torch.Tensor] = []
    firsts: list[dict[str, float]] = []
    for i, e in enumerate(encs):
        # position p predicts the token at p + 1
        pos = [e.prompt_last] + e.answer_positions[:-1]
        h = norm(last_raw[i, torch.as_tensor(pos, dtype=torch.long, device=last_raw.device)])
        z = head(h).float()
        if softcap:
            z = torch.tanh(z / softcap) * softcap
        lp = torch.log_softmax(z, dim=-1).cpu()
        ids = torch.as_tensor(e.answer_ids, dtype=torch.long)
        logprobs.append(lp[torch.arange(len(ids)), ids] if len(ids) else torch.empty(0))
        p0 = lp[0].exp()
        firsts.append({word: float(p0[tok_ids].sum()) for word, tok_ids in first_token_ids.items()})
    return logprobs, firsts
