"""Image-feature cache for scoring: the vision tower runs once per distinct image.

Production traffic repeats images (several questions about one picture, retries, A/B prompts);
the vision tower and projector are ~11% of a LLaVA-1.5-7B pass stopped at layer 16. The adapter
has no hook for precomputed image features, so while a scoring pass runs, the model's
``get_image_features`` is wrapped: images already seen (keyed by a hash of their pixel tensor,
so the same pixels always give the same features) are served from an LRU, only the others go
through the vision tower. LLaVA and PaliGemma only (Qwen2-VL's variable-size patch grids are
left alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from typing import Any, Iterator

__all__ = ["ImageFeatureCache", "SUPPORTED_FAMILIES"]

log = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("llava", "paligemma")


def _key(pixels: Any) -> str:
    """sha256 of one image's pixel tensor (shape, dtype and bytes)."""
    import torch

    t = pixels.detach().contiguous().cpu().reshape(-1)
    h = hashlib.sha256(f"{tuple(pixels.shape)}:{pixels.dtype}:".encode())
    h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ImageFeatureCache:
    """LRU of per-image projected features for one loaded model."""

    def __init__(self, model: Any, family: str, max_entries: int = 512) -> None:
        if family not in SUPPORTED_FAMILIES:
            raise ValueError(f"image-feature cache supports {SUPPORTED_FAMILIES}, not {family!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.inner = model.model  # LlavaModel / PaliGemmaModel: the forward calls self.get_image_features
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._lru: OrderedDict[str, Any] = OrderedDict()
        self._as_list = family == "llava"

    def __len__(self) -> int:
        return len(self._lru)

    def _wrap(self, original: Any) -> Any:
        import torch

        def get_image_features(pixel_values: Any, *args: Any, **kwargs: Any) -> Any:
            keys = [_key(pixel_values[i]) for i in range(pixel_values.shape[0])]
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k not in self._lru:
                    first.setdefault(k, i)  # an image twice in one batch runs through the tower once
            missing = list(first.values())
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
            out = None
            if missing:
                out = original(pixel_values[missing], *args, **kwargs)
                pooled = out.pooler_output
                for j, i in enumerate(missing):
                    self._lru[keys[i]] = pooled[j]
            feats = []
            for k in keys:
                self._lru.move_to_end(k)
                feats.append(self._lru[k])
            while len(self._lru) > self.max_entries:
                self._lru.popitem(last=False)
            if out is None:
                from transformers.modeling_outputs import BaseModelOutputWithPooling

                out = BaseModelOutputWithPooling()
            # LLaVA hands back a list of [n_i, H] per image, PaliGemma one [B, n, H] tensor
            out.pooler_output = feats if self._as_list else torch.stack(feats)
            return out

        return get_image_features

    @contextlib.contextmanager
    def active(self) -> Iterator[ImageFeatureCache]:
        """Serve image features from the cache for the passes run inside this block."""
        own = vars(self.inner).get("get_image_features")  # an instance-level override someone set, if any
        self.inner.get_image_features = self._wrap(self.inner.get_image_features)
        try:
            yield self
        finally:
            if own is None:
                del self.inner.get_image_features  # back to the class method
            else:
                self.inner.get_image_features = own
