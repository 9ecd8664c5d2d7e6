"""Model adapter: one API over local HF VLM folders (LLaVA, PaliGemma, Qwen2-VL).

See docs/CONTRACTS.md ("Model adapter API"). Importing this package is light: torch and
transformers load when a model does.
"""

from monitor.adapter.encoding import Encoded
from monitor.adapter.families import FAMILIES, UnsupportedModelError, supported_architectures
from monitor.adapter.forward import ForwardOutput
from monitor.adapter.generation import Generation
from monitor.adapter.vlm import DEFAULT_ANSWER_WORDS, VLMAdapter, load_vlm

__all__ = [
    "load_vlm",
    "VLMAdapter",
    "UnsupportedModelError",
    "Encoded",
    "ForwardOutput",
    "Generation",
    "FAMILIES",
    "DEFAULT_ANSWER_WORDS",
    "supported_architectures",
]
