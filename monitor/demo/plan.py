"""The demo's knobs: traffic volume, label rate and delay, where and how the shift is injected.

The traffic mixes SynPOPE tasks (``tasks``: 60% yes/no, 40% ``describe`` captions by default).
Defaults were measured to make the effect clear on 2 CPU cores in under 10 minutes (README "Demo"):
enough labelled traffic before the shift for a reference and quiet detectors, and a shift large
enough that the disagreement detector fires within a minute or two of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from monitor.demo.tasks import DEFAULT_MIX

__all__ = ["DemoPlan", "parse_duration"]


def parse_duration(text: str) -> float:
    """``"6m"``, ``"90s"``, ``"1m30s"`` or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not m or not any(m.groups()):
        raise ValueError(f"--duration must look like 6m, 90s or 5m30s, got {text!r}")
    return float(m.group(1) or 0) * 60 + float(m.group(2) or 0)


@dataclass(frozen=True)
class DemoPlan:
    model: str = "tiny-llava"  # the served fixture (its folder name is the served model name)
    model_dir: str | None = None  # serve this model folder under ``model`` instead of the shipped fixture
    rate: float = 10.0  # requests per second replayed through the proxy
    traffic_seconds: float = 300.0  # total replay time
    shift_fraction: float = 0.5  # share of the replay before the shift
    base_split: str = "random"  # SynPOPE split of the stable period (the probe is trained on it)
    shift_split: str = "adversarial"  # split after the shift
    shift_noise: float = 0.45  # plus Gaussian pixel noise (fraction of 0..255) after the shift
    # plus a new co-occurrence structure after the shift (SynPOPE ``cooc_seed``): scenes pair objects
    # the model never saw together, so its learned partner prior names absent objects in captions
    shift_cooc_seed: int = 1
    tasks: tuple[tuple[str, float], ...] = DEFAULT_MIX  # (task, share) of the traffic (monitor.demo.tasks)
    label_share: float = 0.10  # share of samples that receive a ground-truth label
    label_delay_seconds: float = 4.0  # labels arrive this long after the response
    # labelled SynPOPE samples (in the task mix) the probe is trained on, when none is active; measured
    # on the fixture LLaVA, held-out AUROC 0.59 with 500, 0.74 with 1000, 0.78 with 2000 (51 s)
    probe_train_n: int = 1500
    reference_n: int = 400  # labelled samples of the pinned reference set (answered by the model before the traffic)
    detect_horizon: int = 2000  # detect.horizon: false-alarm rate target per this many labels (the demo's scale)
    min_labels: int = 50  # calibration.min_labels for the demo's short windows
    concurrency: int = 4  # client threads (the rate is paced, not the concurrency)
    seed: int = 0

    @property
    def total(self) -> int:
        return int(round(self.rate * self.traffic_seconds))

    @property
    def shift_at(self) -> int:
        """Index of the first shifted sample."""
        return int(round(self.total * self.shift_fraction))

    def with_duration(self, seconds: float) -> "DemoPlan":
        if seconds < 30:
            raise ValueError("--duration must be at least 30s")
        return replace(self, traffic_seconds=seconds)
