"""The VLM families the adapter supports and where each keeps its parts.

A family is recognised from the folder's ``config.json`` (``model_type``), never from its name,
so the same code loads a tiny fixture and a 7B checkpoint. Everything family-specific that the
rest of the adapter needs lives here: the model class, the decoder layers and final norm, the
image placeholder token, the prompt format and the per-token model inputs that padding extends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "UnsupportedModelError",
    "supported_architectures",
    "detect_family",
    "decoder_layers",
    "final_norm",
    "image_token_id",
    "build_prompt_text",
]

log = logging.getLogger(__name__)


class UnsupportedModelError(ValueError):
    """The model folder holds an architecture the adapter cannot drive; the message names the supported ones."""


@dataclass(frozen=True)
class FamilySpec:
    family: str  # our short name: llava | paligemma | qwen2_vl
    model_type: str  # config.json "model_type"
    class_name: str  # transformers class that loads it
    # per-token model inputs the processor returns besides input_ids/attention_mask, with the
    # value right-padding uses (PaliGemma: 1 = suffix, so padding stays out of the bidirectional prefix)
    token_inputs: tuple[tuple[str, int], ...] = ()


FAMILIES: dict[str, FamilySpec] = {
    "llava": FamilySpec("llava", "llava", "LlavaForConditionalGeneration"),
    "paligemma": FamilySpec("paligemma", "paligemma", "PaliGemmaForConditionalGeneration", (("token_type_ids", 1),)),
    "qwen2_vl": FamilySpec("qwen2_vl", "qwen2_vl", "Qwen2VLForConditionalGeneration", (("mm_token_type_ids", 0),)),
}


def supported_architectures() -> str:
    return ", ".join(f"{s.class_name} (model_type {s.model_type!r})" for s in FAMILIES.values())


def detect_family(config: PretrainedConfig) -> FamilySpec:
    """The family of a loaded ``PretrainedConfig``; :class:`UnsupportedModelError` otherwise."""
    model_type = getattr(config, "model_type", None)
    for spec in FAMILIES.values():
        if spec.model_type == model_type:
            return spec
    archs = getattr(config, "architectures", None) or []
    raise UnsupportedModelError(
        f"unsupported model: model_type {model_type!r} (architectures {', '.join(archs) or 'not given'}); "
        f"the adapter supports {supported_architectures()}"
    )


def _language_model(model: Any) -> Any:
    inner = getattr(model, "model", None)
    lm = getattr(inner, "language_model", None)
    if lm is None and hasattr(model, "get_decoder"):
        lm = model.get_decoder()
    if lm is None or not hasattr(lm, "layers"):
        raise UnsupportedModelError(
            f"cannot find the decoder layers of {type(model).__name__}; the adapter supports {supported_architectures()}"
        )
    return lm


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder layers of the language model."""
    return _language_model(model).layers


def final_norm(model: Any) -> Any:
    """The norm applied after the last decoder layer (HF ``hidden_states[L]`` is after it)."""
    return _language_model(model).norm


def image_token_id(config: PretrainedConfig) -> int | None:
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    return None


# llava-1.5's own format, for LLaVA folders that ship no chat template
_LLAVA_FALLBACK = "USER: {image}\n{prompt} ASSISTANT:"


def _chat_template(processor: Any) -> str | None:
    tmpl = getattr(processor, "chat_template", None)
    if not tmpl:
        tmpl = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    return tmpl or None


def build_prompt_text(spec: FamilySpec, processor: Any, prompt: str, has_image: bool) -> str:
    """The text the processor receives: the model's own chat template with one image item.

    PaliGemma has no chat format: its processor puts the image tokens and BOS before the prompt
    and a newline after it, so the text is the image placeholder followed by the prompt.
    """
    image_token = getattr(processor, "image_token", "<image>")
    if spec.family == "paligemma":
        return (image_token if has_image else "") + prompt
    template = _chat_template(processor)
    if template is None:
        if spec.family != "llava":
            raise UnsupportedModelError(f"{spec.class_name} folder has no chat template")
        log.debug("no chat template in the LLaVA folder: using the llava-1.5 prompt format")
        return _LLAVA_FALLBACK.format(image=image_token if has_image else "", prompt=prompt)
    content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    messages = [{"role": "user", "content": content}]
    apply = getattr(processor, "apply_chat_template", None) or processor.tokenizer.apply_chat_template
    return str(apply(messages, add_generation_prompt=True, tokenize=False, chat_template=template))
