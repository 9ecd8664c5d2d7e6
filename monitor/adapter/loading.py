"""Loading a local model folder offline: family, device, dtype, processor, fingerprint.

The same path loads a tiny fixture on a laptop CPU and a 7B checkpoint on a GPU host; nothing is
fetched from a hub (``local_files_only=True`` everywhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from monitor.adapter.families import FAMILIES, FamilySpec, UnsupportedModelError, detect_family, supported_architectures

__all__ = ["resolve_device", "resolve_dtype", "load_parts", "fingerprint_folder", "WEIGHT_SUFFIXES"]

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def resolve_device(device: str = "auto") -> Any:
    """``auto`` = the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """``auto`` = bfloat16 on CUDA, float32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(sorted(set(_DTYPES.values())))}")
    return getattr(torch, name)


def _read_config(path: Path) -> Any:
    from transformers import AutoConfig

    if not path.is_dir():
        raise FileNotFoundError(f"model folder {str(path)!r} does not exist or is not a folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"model folder {str(path)!r} has no config.json (save_pretrained layout expected)")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from e
    # decide before transformers parses it: an unknown model_type should not read as a transformers bug
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in {s.model_type for s in FAMILIES.values()}:
        archs = ", ".join(raw.get("architectures") or []) if isinstance(raw, dict) else ""
        raise UnsupportedModelError(
            f"unsupported model in {path}: model_type {model_type!r} (architectures {archs or 'not given'}); "
            f"the adapter supports {supported_architectures()}"
        )
    return AutoConfig.from_pretrained(path, local_files_only=True)


def _load_processor(spec: FamilySpec, path: Path) -> Any:
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    if spec.family == "qwen2_vl" and not is_torchvision_available():
        from monitor.adapter.qwen_lite import load_qwen_lite

        return load_qwen_lite(path)
    return AutoProcessor.from_pretrained(path, local_files_only=True)


def load_parts(path: Path, device: Any, dtype: Any, attn_implementation: str | None) -> tuple[FamilySpec, Any, Any]:
    """(family spec, model in eval mode on ``device``, processor)."""
    import transformers

    config = _read_config(path)
    spec = detect_family(config)
    cls = getattr(transformers, spec.class_name)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = cls.from_pretrained(path, **kwargs).to(device).eval()
    processor = _load_processor(spec, path)
    log.info("loaded %s (%s) from %s on %s as %s", spec.class_name, spec.family, path, device, dtype)
    return spec, model, processor


def fingerprint_folder(path: Path) -> str:
    """sha256 of the canonical config.json and every weight file (name and bytes, in name order).

    Identifies a deploy: the same weights give the same fingerprint wherever and however
    (device, dtype) they are loaded.
    """
    h = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    h.update(b"config\0" + json.dumps(config, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    weights = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not weights:
        raise FileNotFoundError(f"model folder {path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for p in weights:
        h.update(str(p.relative_to(path)).encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
