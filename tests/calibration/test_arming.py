"""`vlmwatch status` says when the label-based detectors arm: reference labels had vs needed."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from monitor.calibration.arming import arming_report
from monitor.calibration.reference import ensure_default_reference, set_reference
from monitor.commands.status import _arming_text
from storage.models import ProbeVersion


def test_default_reference_arms_after_reference_n_labels_a_pinned_one_at_once(world, fast_settings):
    settings = fast_settings()  # reference_n 600, min_labels 100
    rng = np.random.default_rng(0)
    world.add(rng.uniform(size=150), rng.uniform(size=150) < 0.8, seconds_apart=10)
    with world.factory() as s:
        assert arming_report(s, settings)[0]["reference"] == "none"
        ensure_default_reference(s, settings, s.get(ProbeVersion, world.pv_id))
        s.commit()
        (d,) = arming_report(s, settings)
    assert (d["model"], d["reference"], d["labelled"], d["needed"], d["armed"]) == ("m1", "default", 150, 600, False)
    assert d["labels_last_hour"] == 150 and d["eta_hours"] == 3.0  # 450 more at 150 an hour
    text = _arming_text(d)
    assert "150 of 600 labelled samples" in text and "about 3.0 h" in text and "reference set" in text
    with world.factory() as s:
        set_reference(s, settings, "m1", world.t0, world.t0 + timedelta(hours=1))
        s.commit()
        (d,) = arming_report(s, settings)
    assert (d["reference"], d["labelled"], d["needed"], d["armed"], d["eta_hours"]) == ("pinned", 150, 100, True, None)
    assert _arming_text(d) == "armed (pinned reference, 150 labelled samples)"
