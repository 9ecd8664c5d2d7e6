"""ONNX Runtime runner for probe heads: CUDA provider when present, CPU otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from monitor.probe.head import ONNX_INPUT, ProbeHead

__all__ = ["OnnxHeadRunner", "choose_providers"]

log = logging.getLogger(__name__)


def choose_providers(device: str = "auto") -> list[str]:
    """Execution providers for ``device`` (auto | cpu | cuda | cuda:N), CPU always last."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    want_cuda = device.startswith("cuda") or device == "auto"
    if want_cuda and "CUDAExecutionProvider" in available and _cuda_usable():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        log.warning("device %s asked for, but ONNX Runtime's CUDA provider is unusable here: using CPU", device)
    return ["CPUExecutionProvider"]


def _cuda_usable() -> bool:
    # onnxruntime-gpu lists the CUDA provider even on hosts without a GPU; creating a session
    # would then log errors and fall back. Ask torch whether a device exists.
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: trust onnxruntime
        return True


class OnnxHeadRunner:
    """Runs ``head.onnx`` on pooled hidden states and applies the head's isotonic table."""

    def __init__(self, onnx_path: str | Path, head: ProbeHead, device: str = "auto") -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"probe head ONNX file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # a [N, H] x [H, 1] product: threads cost more than they save
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=choose_providers(device))
        self.head = head
        self.providers = self.session.get_providers()
        shape = self.session.get_inputs()[0].shape
        if shape[1] != head.hidden_size:
            raise ValueError(f"{path}: graph expects hidden size {shape[1]}, head metadata says {head.hidden_size}")
        log.info("probe head runner on %s", self.providers[0])

    def raw(self, features: np.ndarray) -> np.ndarray:
        """The graph's sigmoid output, [N]."""
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.head.hidden_size:
            raise ValueError(f"probe head expects [N, {self.head.hidden_size}] features, got shape {x.shape}")
        (out,) = self.session.run(None, {ONNX_INPUT: x})
        return out[:, 0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Calibrated p_correct, [N]."""
        return self.head.calibrate(self.raw(features))
