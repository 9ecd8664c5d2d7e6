"""Qwen2-VL inputs without torchvision.

``Qwen2VLProcessor`` cannot be built where torchvision is missing (its video processor needs
it), although images alone need only the PIL image processor and the tokenizer. This stand-in
does exactly what the real processor does for one image: expand ``<|image_pad|>`` to
``grid_t*grid_h*grid_w / merge_size**2`` tokens and mark them in ``mm_token_type_ids``. The
adapter uses it only when torchvision is absent; where it exists the real processor runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["QwenImageTextProcessor", "load_qwen_lite"]

log = logging.getLogger(__name__)

IMAGE_PAD = "<|image_pad|>"


class QwenImageTextProcessor:
    """The image-and-text part of ``Qwen2VLProcessor`` (``__call__`` and ``apply_chat_template``)."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_PAD
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        kwargs.setdefault("chat_template", self.chat_template)
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, return_tensors: str = "pt", **_: Any) -> dict[str, Any]:
        import torch

        texts = [text] if isinstance(text, str) else list(text)
        out: dict[str, Any] = {}
        if images is not None:
            imgs = images if isinstance(images, (list, tuple)) else [images]
            if len(imgs) != len(texts):
                raise ValueError(f"got {len(imgs)} images for {len(texts)} texts; one image per text is supported")
            feats = self.image_processor(images=list(imgs), return_tensors="pt")
            out["pixel_values"] = feats["pixel_values"]
            out["image_grid_thw"] = feats["image_grid_thw"]
            merge = int(self.image_processor.merge_size) ** 2
            expanded = []
            for t, thw in zip(texts, feats["image_grid_thw"]):
                if t.count(self.image_token) != 1:
                    raise ValueError(f"each text must hold exactly one {self.image_token} placeholder")
                expanded.append(t.replace(self.image_token, self.image_token * (int(thw.prod()) // merge)))
            texts = expanded
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        out["input_ids"] = enc["input_ids"]
        out["attention_mask"] = enc["attention_mask"]
        out["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).to(torch.int32)
        return out


def _read_chat_template(path: Path, tokenizer: Any) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "processor_config.json"):
        f = path / name
        if f.is_file():
            tmpl = json.loads(f.read_text()).get("chat_template")
            if tmpl:
                return str(tmpl)
    return getattr(tokenizer, "chat_template", None)


def load_qwen_lite(path: Path) -> QwenImageTextProcessor:
    """Tokenizer, PIL image processor and chat template of a Qwen2-VL folder."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
    else:
        conf = json.loads((path / "processor_config.json").read_text()).get("image_processor", {})
        conf = {k: v for k, v in conf.items() if k not in ("image_processor_type", "processor_class")}
        image_processor = Qwen2VLImageProcessorPil(**conf)
    log.info("torchvision is not installed: Qwen2-VL images go through the PIL image processor")
    return QwenImageTextProcessor(image_processor, tokenizer, _read_chat_template(path, tokenizer))
