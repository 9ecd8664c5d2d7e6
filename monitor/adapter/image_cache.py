"""An LRU cache of projected image features, keyed by the image's hash (``Encoded.image_key``).

POPE-style traffic asks several questions about one image, and spot checks revisit scored
images: the vision tower and projector need to run once per image, not once per question.
Cached features are handed to the model as ``mm_encoder_outputs`` (transformers' own input for
pre-computed encoder outputs) in place of ``pixel_values``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from monitor.adapter.encoding import Batch, Encoded
from monitor.adapter.families import FamilySpec

if TYPE_CHECKING:
    import torch

__all__ = ["ImageFeatureCache", "use_cached_features"]

log = logging.getLogger(__name__)


class ImageFeatureCache:
    """At most ``size`` entries of per-image features ``[n_image_tokens, H]`` on the model's device."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"image cache size must be >= 1, got {size}")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> torch.Tensor | None:
        value = self._entries.get(key)
        if value is None:
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: torch.Tensor) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _encode_images(model: Any, spec: FamilySpec, encs: list[Encoded], device: Any, dtype: Any) -> list[torch.Tensor]:
    """Projected features of each sample's image, one ``[n_image_tokens, H]`` tensor each."""
    import torch

    pixel_values = torch.cat([e.extra["pixel_values"] for e in encs]).to(device, dtype)
    inner = model.model
    if spec.family == "qwen2_vl":
        grid = torch.cat([e.extra["image_grid_thw"] for e in encs]).to(device)
        out = inner.get_image_features(pixel_values, grid, return_dict=True)
    else:
        out = inner.get_image_features(pixel_values=pixel_values, return_dict=True)
    return [f for f in out.pooler_output]


def use_cached_features(
    model: Any, spec: FamilySpec, cache: ImageFeatureCache, encs: list[Encoded], batch: Batch, device: Any, dtype: Any
) -> None:
    """Swap ``pixel_values`` in ``batch`` for cached (or freshly computed, then cached) features."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if "pixel_values" not in batch.kwargs or any(e.image_key is None for e in encs):
        return
    feats: dict[str, Any] = {}
    missing: dict[str, Encoded] = {}
    for e in encs:
        key = e.image_key
        assert key is not None
        hit = cache.get(key)
        if hit is not None:
            feats[key] = hit
        elif key not in missing:
            missing[key] = e
    cache.hits += len(encs) - len(missing)
    cache.misses += len(missing)
    if missing:
        import torch

        with torch.inference_mode():
            fresh = _encode_images(model, spec, list(missing.values()), device, dtype)
        for key, f in zip(missing, fresh):
            feats[key] = f
            cache.put(key, f)
    per_sample = [feats[e.image_key] for e in encs if e.image_key is not None]
    import torch

    # each family's forward consumes the same features in its own container
    pooled: Any = torch.stack(per_sample) if spec.family == "paligemma" else list(per_sample)
    del batch.kwargs["pixel_values"]
    batch.kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
