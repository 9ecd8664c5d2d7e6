"""The probe head: one linear map of a pooled hidden state, a sigmoid, optional isotonic map.

Standardisation and Platt scaling are affine in the logit, so both are folded into the linear
weights: the exported head is exactly ``sigmoid(x @ w + b)`` on the raw hidden state, which is
what the ONNX graph computes (MatMul, Add, Sigmoid). Isotonic calibration is not affine; it is
kept as a monotone piecewise-linear table applied after the graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["POOLINGS", "DEFAULT_POOLINGS", "EMBEDDING_POOLINGS", "LOGPROB_POOLINGS", "ProbeHead", "export_onnx",
           "torch_head"]

log = logging.getLogger(__name__)

# answer: hidden state at the first served-answer token (teacher-forced);
# prompt_last: the last prompt token, whose next-token prediction is the answer;
# answer_mean: mean over all served-answer tokens;
# answer_stats: the answer tokens' mean, elementwise min, elementwise max and last hidden state at the layer,
#   then the same four of their input embeddings (layer 0: which words the answer uses), [8H]: the
#   evidence of every token, not only their average (a caption is wrong when one named object is);
# answer_stats_lp: answer_stats, then the mean and the lowest log-probability of the served answer
#   tokens [8H + 2]; those need the LM head, so a probe with it is scored by the full pass.
POOLINGS = ("answer", "prompt_last", "answer_mean", "answer_stats", "answer_stats_lp")
# what `probe train` sweeps unless told otherwise (yes/no probes as before #12's per-token poolings;
# free-form data asks for answer_stats / answer_stats_lp with --poolings)
DEFAULT_POOLINGS = ("answer", "prompt_last", "answer_mean")
EMBEDDING_POOLINGS = frozenset({"answer_stats", "answer_stats_lp"})  # also read layer 0
LOGPROB_POOLINGS = frozenset({"answer_stats_lp"})  # also read the answer tokens' log-probabilities (full pass)

ONNX_INPUT = "hidden"
ONNX_OUTPUT = "p_correct"


@dataclass(frozen=True)
class ProbeHead:
    """``p = iso(sigmoid(x @ weight + bias))`` on a raw pooled hidden state ``x`` of size H."""

    weight: np.ndarray  # [H] float32, standardisation and Platt scaling folded in
    bias: float
    iso_x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # isotonic knots (empty: none)
    iso_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.float32)
        if w.ndim != 1 or not len(w):
            raise ValueError(f"probe head weight must be a non-empty vector, got shape {w.shape}")
        if len(self.iso_x) != len(self.iso_y):
            raise ValueError("isotonic knots: x and y differ in length")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "iso_x", np.asarray(self.iso_x, dtype=np.float32))
        object.__setattr__(self, "iso_y", np.asarray(self.iso_y, dtype=np.float32))

    @property
    def hidden_size(self) -> int:
        return len(self.weight)

    @classmethod
    def from_standardised(
        cls, coef: np.ndarray, intercept: float, mean: np.ndarray, scale: np.ndarray
    ) -> ProbeHead:
        """Fold a logistic regression fitted on ``(x - mean) / scale`` into raw-space weights."""
        coef = np.asarray(coef, np.float64).ravel()
        w = coef / np.asarray(scale, np.float64)
        b = float(intercept) - float(np.dot(w, np.asarray(mean, np.float64)))
        return cls(weight=w.astype(np.float32), bias=b)

    def with_platt(self, a: float, c: float) -> ProbeHead:
        """Head whose logit is ``a * logit + c`` (Platt scaling folded into the weights)."""
        return ProbeHead(weight=(self.weight.astype(np.float64) * a).astype(np.float32), bias=a * self.bias + c)

    def with_isotonic(self, x: np.ndarray, y: np.ndarray) -> ProbeHead:
        return ProbeHead(weight=self.weight, bias=self.bias, iso_x=x, iso_y=y)

    def logit(self, x: np.ndarray) -> np.ndarray:
        x = self._check_input(x)
        return x.astype(np.float64) @ self.weight.astype(np.float64) + self.bias

    def raw_prob(self, x: np.ndarray) -> np.ndarray:
        """The graph's output (before any isotonic map)."""
        return 1.0 / (1.0 + np.exp(-self.logit(x)))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Apply the isotonic table (identity when there is none) to graph outputs."""
        raw = np.asarray(raw, dtype=np.float64)
        if not len(self.iso_x):
            return raw
        return np.interp(raw, self.iso_x.astype(np.float64), self.iso_y.astype(np.float64))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.calibrate(self.raw_prob(x))

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.hidden_size:
            raise ValueError(f"probe head expects [N, {self.hidden_size}] features, got shape {x.shape}")
        return x


def torch_head(head: ProbeHead):
    """The head as ``torch.nn.Sequential(Linear(H, 1), Sigmoid())`` (float32, eval mode)."""
    import torch

    lin = torch.nn.Linear(head.hidden_size, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(head.weight)[None, :])
        lin.bias.fill_(head.bias)
    return torch.nn.Sequential(lin, torch.nn.Sigmoid()).eval()


def export_onnx(head: ProbeHead, path: str | Path) -> Path:
    """Write the head as a three-node ONNX graph: ``Sigmoid(MatMul(hidden, W) + b)`` -> [N, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(head.weight.reshape(-1, 1).astype(np.float32), name="W")
    b = numpy_helper.from_array(np.array([head.bias], dtype=np.float32), name="b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [ONNX_INPUT, "W"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], [ONNX_OUTPUT]),
        ],
        "vlmwatch_probe_head",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["N", head.hidden_size])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["N", 1])],
        initializer=[w, b],
    )
    # opset 17 with IR 8 loads in every onnxruntime >= 1.14
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vlmwatch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    log.debug("exported probe head (H=%d) to %s", head.hidden_size, path)
    return path
