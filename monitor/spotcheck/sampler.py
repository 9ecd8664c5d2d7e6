"""K sampled answers from ONE prefill: the image+prompt pass runs once, its KV cache is shared.

``generate(num_return_sequences=K)`` repeats the inputs before the prefill and so pays K prefills
(K vision-encoder passes and K prompt passes). Here the prefill runs at batch 1, its cache is
repeated to the K streams, and only the decode steps run at batch K.

Each stream draws with its own ``torch.Generator`` (seeded per stream), so a stream's tokens do
not depend on how the K streams are batched: an out-of-memory error splits the streams into
smaller chunks that re-use the same prefill and give the same answers. With the same per-stream
seed, a stream reproduces ``torch.manual_seed(seed); model.generate(do_sample=True, top_k=None)``
at batch 1 (the test suite checks this, logits within 1e-5).
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

__all__ = [
    "Prefill",
    "SampledStreams",
    "DecodeParams",
    "Decoded",
    "Decoder",
    "cache_kwarg",
    "prefill",
    "decode_streams",
    "sample_shared_prefill",
    "DeviceTimer",
    "is_oom",
]

log = logging.getLogger(__name__)


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument of ``model.forward`` (``cache`` from transformers 5.2x on)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: Any) -> Any:
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


class DeviceTimer:
    """Seconds of device time on CUDA (events), wall seconds elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.seconds = 0.0

    def __enter__(self) -> DeviceTimer:
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self._t0


def is_oom(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (the typed one and the older RuntimeError text)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class Prefill:
    """The batch-1 prefill: its KV cache, the next-token logits and the prompt length."""

    cache: Any
    logits: torch.Tensor  # [V] float32, next-token logits after the prompt
    length: int
    seconds: float = 0.0


@dataclass
class SampledStreams:
    """K decoded streams."""

    tokens: list[list[int]]  # generated ids per stream, EOS and after removed
    finished: list[bool]  # stream ended with EOS (else it hit max_new_tokens)
    prefill_logits: torch.Tensor  # [V] float32 on CPU
    compute_seconds: float  # prefill + decode, device seconds on CUDA, wall seconds on CPU
    oom_splits: int = 0  # how many times a chunk of streams was halved after out-of-memory
    step_logits: list[torch.Tensor] | None = field(default=None, repr=False)  # per stream [steps, V]


@dataclass(frozen=True)
class DecodeParams:
    """How each stream is decoded (the same for every chunk of streams)."""

    temperature: float
    max_new_tokens: int
    eos_token_ids: Sequence[int] = ()
    min_new_tokens: int = 0  # EOS is masked out before this many tokens
    record_logits: bool = False


# per stream: generated ids (EOS and after removed), ended with EOS, step logits [steps, V] (or None)
Decoded = tuple[list[list[int]], list[bool], list[torch.Tensor] | None]


class Decoder(Protocol):
    """Decodes ``len(generators)`` streams from a prefill: :func:`decode_streams` (dynamic cache) or
    :class:`monitor.spotcheck.static_decode.StaticDecoder` (static cache, CUDA graphs)."""

    def __call__(self, model: torch.nn.Module, pre: Prefill, generators: Sequence[torch.Generator],
                 params: DecodeParams, /) -> Decoded: ...


@torch.inference_mode()
def prefill(model: torch.nn.Module, input_ids: torch.Tensor, extra: Mapping[str, Any] | None = None) -> Prefill:
    """Run the image+prompt pass once at batch 1 and keep its cache."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"prefill takes one prompt (input_ids of shape [T] or [1, T]), got {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {}
    for k, v in (extra or {}).items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(model.dtype)
            if v.dim() == 1 and k in ("attention_mask", "token_type_ids"):
                v = v.unsqueeze(0)
        kwargs[k] = v
    kwargs.setdefault("attention_mask", torch.ones_like(input_ids))
    with DeviceTimer(device) as t:
        out = model(input_ids=input_ids.to(device), use_cache=True, logits_to_keep=1, **kwargs)
        logits = out.logits[0, -1].float()
    return Prefill(cache=_out_cache(out), logits=logits, length=int(input_ids.shape[1]), seconds=t.seconds)


def _draw(logits: torch.Tensor, temperature: float, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row: argmax at temperature 0, else a per-row multinomial draw."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g).view(1) for i, g in enumerate(gens)])


def eos_tensor(params: DecodeParams, device: torch.device) -> torch.Tensor:
    """The EOS ids as a long tensor on ``device`` (empty: no EOS)."""
    return torch.tensor(sorted(set(params.eos_token_ids)), dtype=torch.long, device=device)


def next_tokens(logits: torch.Tensor, step: int, eos: torch.Tensor, params: DecodeParams,
                gens: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step's draw for each row, EOS masked before ``min_new_tokens``; and which rows drew EOS."""
    scores = logits
    if step < params.min_new_tokens and eos.numel():
        scores = logits.clone()
        scores[:, eos] = float("-inf")
    nxt = _draw(scores, params.temperature, gens)
    done = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(nxt, dtype=torch.bool)
    return nxt, done


def stacked(logs: list[list[torch.Tensor]] | None) -> list[torch.Tensor] | None:
    """Per-stream step logits as one [steps, V] tensor each (None when not recorded)."""
    return [torch.stack(x) if x else torch.empty(0) for x in logs] if logs is not None else None


@torch.inference_mode()
def decode_streams(model: torch.nn.Module, pre: Prefill, generators: Sequence[torch.Generator],
                   params: DecodeParams) -> Decoded:
    """Decode ``len(generators)`` streams from a copy of the prefill cache; the prefill is untouched."""
    n = len(generators)
    device = pre.logits.device
    eos = eos_tensor(params, device)
    cache = copy.deepcopy(pre.cache)
    cache.batch_repeat_interleave(n)
    kw = cache_kwarg(model)
    active = torch.arange(n, device=device)  # stream index of each batch row
    gens = list(generators)
    tokens: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    logs: list[list[torch.Tensor]] | None = [[] for _ in range(n)] if params.record_logits else None
    logits = pre.logits.unsqueeze(0).expand(n, -1)
    for step in range(params.max_new_tokens):
        if logs is not None:
            for row, s in enumerate(active.tolist()):
                logs[s].append(logits[row].detach().float().cpu())
        nxt, done = next_tokens(logits, step, eos, params, gens)
        nxt_l, done_l = nxt.tolist(), done.tolist()
        for row, s in enumerate(active.tolist()):
            if done_l[row]:
                finished[s] = True
            else:
                tokens[s].append(nxt_l[row])
        if step == params.max_new_tokens - 1:
            break
        if any(done_l):  # drop finished streams from the batch
            keep = (~done).nonzero().view(-1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            active, nxt = active[keep], nxt[keep]
            gens = [gens[i] for i in keep.tolist()]
        # no attention mask: the streams share one unpadded prompt, and without a mask the model
        # derives positions from the cache length (Qwen2-VL adds its M-RoPE deltas to those)
        out = model(input_ids=nxt.unsqueeze(1), use_cache=True, **{kw: cache})
        cache = _out_cache(out)
        logits = out.logits[:, -1].float()
    return tokens, finished, stacked(logs)


def sample_shared_prefill(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    extra: Mapping[str, Any] | None = None,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seeds: Sequence[int],
    eos_token_ids: Sequence[int] = (),
    min_new_tokens: int = 0,
    max_streams: int | None = None,
    record_logits: bool = False,
    decode: Decoder = decode_streams,
) -> SampledStreams:
    """Prefill once, then decode ``k`` streams in chunks of at most ``max_streams``.

    An out-of-memory error in a chunk halves the chunk and retries; a chunk of one stream that
    still does not fit re-raises. ``seeds`` gives one RNG seed per stream.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(seeds) != k:
        raise ValueError(f"need one seed per stream: k={k}, got {len(seeds)} seeds")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    params = DecodeParams(temperature=temperature, max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                          min_new_tokens=min_new_tokens, record_logits=record_logits)
    pre = prefill(model, input_ids, extra)
    device = pre.logits.device
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    chunk = max(1, min(k, max_streams or k))
    tokens: list[list[int]] = []
    finished: list[bool] = []
    logits: list[torch.Tensor] = []
    splits = 0
    seconds = pre.seconds
    start = 0
    while start < k:
        n = min(chunk, k - start)
        states = [g.get_state() for g in gens[start : start + n]]
        try:
            with DeviceTimer(device) as t:
                tk, fin, lg = decode(model, pre, gens[start : start + n], params)
        except Exception as e:
            if not is_oom(e) or n == 1:
                raise
            for g, st in zip(gens[start : start + n], states):
                g.set_state(st)  # the retried streams draw exactly what they would have
            chunk = max(1, n // 2)
            splits += 1
            log.warning("out of memory decoding %d streams; retrying in chunks of %d", n, chunk)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        seconds += t.seconds
        tokens += tk
        finished += fin
        if lg is not None:
            logits += lg
        start += n
    return SampledStreams(
        tokens=tokens,
        finished=finished,
        prefill_logits=pre.logits.cpu(),
        compute_seconds=seconds,
        oom_splits=splits,
        step_logits=logits if record_logits else None,
    )
