"""`vlmwatch status` says which detectors are armed and what each still needs (#16 part 2b)."""

from __future__ import annotations

import numpy as np

from monitor.calibration.arming import arming_report
from monitor.commands.status import render_text
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from monitor.detect.tune import readiness
from storage.models import utcnow


def test_readiness_names_what_each_detector_needs(world, fast_settings):
    settings = fast_settings()
    st = BinormalProbe().sample(1, 600, np.random.default_rng(1))
    world.add(st.scores[0], st.correct[0])  # labels, no spot checks
    run_detect(world.factory, settings, utcnow())
    with world.factory() as s:
        rows = {r["detector"]: r for r in readiness(s, settings)}
        arming = arming_report(s, settings)
    assert rows["cusum_disagreement:human"]["armed"] and rows["cusum_residual:human"]["armed"]
    assert rows["adwin_scores"]["armed"]
    sc = rows["cusum_disagreement:self_consistency"]
    assert not sc["armed"] and sc["needs"] == "600 more spot checks in the reference (0 of 600)"
    assert rows["adwin_spotcheck"]["needs"] == sc["needs"]
    text = render_text({"database": "x", "revision": "r", "tables": {"samples": 600}, "pending": {}, "totals": {},
                        "jobs": {}, "label_arming": arming, "detectors": list(rows.values())})
    assert "cusum_disagreement:human" in text and "not armed: needs 600 more spot checks" in text
