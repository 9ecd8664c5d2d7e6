"""Recalibrate or retrain? Whether a probe's ranking still holds, from AUROC with CIs.

Recalibration (``vlmwatch probe recalibrate``) is a monotone map of the probe's score: it fixes
calibration (ECE, Brier, the label-free accuracy estimate) and cannot change the ranking, so it
cannot win back AUROC. When the current AUROC is below the probe's reference AUROC by more than
``recalibration.max_auroc_drop`` *and* the drop is beyond noise (its 95% CI excludes zero, both
AUROCs' CIs counted), the advice is to retrain (``vlmwatch probe train`` on recent labels);
otherwise to recalibrate. A pure function, shared by the command, the API and alert texts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from monitor.calibration.metrics import auroc_hanley_mcneil

__all__ = ["DEFAULT_MAX_AUROC_DROP", "RecalibrationAdvice", "recalibration_advice"]

DEFAULT_MAX_AUROC_DROP = 0.05  # RESEARCH.md: probes lose 0.05-0.20 AUROC under shift; below 0.05 ranking "holds"
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class RecalibrationAdvice:
    action: Literal["recalibrate", "retrain"]
    reason: str  # one sentence with the figures
    reference_auroc: float | None
    reference_auroc_ci: tuple[float, float] | None
    current_auroc: float | None
    current_auroc_ci: tuple[float, float] | None
    auroc_drop: float | None  # reference - current
    auroc_drop_ci: tuple[float, float] | None  # 95%, normal approximation from both CIs
    max_auroc_drop: float
    certain: bool  # the drop's CI lies wholly on one side of max_auroc_drop
    model: str | None = None

    @property
    def text(self) -> str:
        """The sentence an alert or a command prints."""
        flag = f" --model {self.model}" if self.model else ""
        if self.action == "retrain":
            return (f"{self.reason}; recalibration cannot fix ranking: retrain "
                    f"(`vlmwatch probe train` on recent labelled samples)")
        return f"{self.reason}; recalibrate with `vlmwatch probe recalibrate{flag}`"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


def _auroc_and_se(m: Mapping[str, Any] | None) -> tuple[float | None, tuple[float, float] | None, float]:
    """AUROC, its 95% CI and standard error from a metrics dict (window_metrics or signal_metrics)."""
    if not m:
        return None, None, math.nan
    auc = m.get("auroc")
    if auc is None or not math.isfinite(float(auc)):
        return None, None, math.nan
    auc = float(auc)
    ci = m.get("auroc_ci") or m.get("auroc_ci_hm")
    if (not ci or None in ci) and m.get("n") and m.get("n_pos") is not None:
        ci = auroc_hanley_mcneil(auc, int(m["n_pos"]), int(m["n"]) - int(m["n_pos"]))
    if not ci or None in ci or not all(math.isfinite(float(v)) for v in ci):
        return auc, None, math.nan
    lo, hi = float(ci[0]), float(ci[1])
    return auc, (lo, hi), max(hi - lo, 0.0) / (2 * _Z95)


def recalibration_advice(
    reference_metrics: Mapping[str, Any] | None,
    current_metrics: Mapping[str, Any] | None,
    *,
    max_auroc_drop: float = DEFAULT_MAX_AUROC_DROP,
    model: str | None = None,
) -> RecalibrationAdvice:
    """``retrain`` when the AUROC fell by more than ``max_auroc_drop`` beyond noise, else ``recalibrate``.

    Both arguments are metrics dicts with ``auroc`` and ``auroc_ci`` (as ``window_metrics`` and
    ``signal_metrics`` give; ``auroc_ci_hm`` or ``n``/``n_pos`` serve when there is no bootstrap CI).
    Without a reference or a current AUROC the ranking cannot be judged: ``recalibrate``, uncertain.
    """
    if not max_auroc_drop >= 0:
        raise ValueError(f"max_auroc_drop must be >= 0, got {max_auroc_drop}")
    ref, ref_ci, ref_se = _auroc_and_se(reference_metrics)
    cur, cur_ci, cur_se = _auroc_and_se(current_metrics)
    base = dict(reference_auroc=ref, reference_auroc_ci=ref_ci, current_auroc=cur, current_auroc_ci=cur_ci,
                max_auroc_drop=max_auroc_drop, model=model)
    if ref is None or cur is None:
        missing = "reference" if ref is None else "current"
        return RecalibrationAdvice("recalibrate", f"no {missing} AUROC to judge the ranking by", auroc_drop=None,
                                   auroc_drop_ci=None, certain=False, **base)
    drop = ref - cur
    se = math.sqrt(sum(v * v for v in (ref_se, cur_se) if math.isfinite(v)))
    drop_ci = (drop - _Z95 * se, drop + _Z95 * se)
    figures = (f"AUROC {_fmt(cur, cur_ci)} vs reference {_fmt(ref, ref_ci)} "
               f"(drop {drop:+.3f} [{drop_ci[0]:+.3f}, {drop_ci[1]:+.3f}], limit {max_auroc_drop:.3f})")
    if drop > max_auroc_drop and drop_ci[0] > 0:
        return RecalibrationAdvice("retrain", f"ranking broke: {figures}", auroc_drop=drop, auroc_drop_ci=drop_ci,
                                   certain=drop_ci[0] > max_auroc_drop, **base)
    certain = drop_ci[1] <= max_auroc_drop
    if certain:
        why = "ranking holds"
    elif drop > max_auroc_drop:
        why = "AUROC may have dropped past the limit, not yet beyond noise (more labels would settle it)"
    else:
        why = "ranking holds within noise (more labels would settle it)"
    return RecalibrationAdvice("recalibrate", f"{why}: {figures}", auroc_drop=drop, auroc_drop_ci=drop_ci,
                               certain=certain, **base)


def _fmt(v: float, ci: tuple[float, float] | None) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"
