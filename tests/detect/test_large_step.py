"""A large step on few labels raises the labelled alert (#16 part 2: a CUSUM tuned for small shifts
stayed silent when accuracy fell from 0.91 to 0.77 on 126 labelled answers)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import select

from monitor.calibration.history import run_calibrate
from monitor.detect import run_detect
from monitor.detect.synthetic import BinormalProbe
from storage.models import Alert, utcnow

PROBE = BinormalProbe()


def test_large_step_on_few_labels_raises_the_labelled_alert(world, fast_settings):
    """A step to ~0.3 disagreement on 126 labels (a binomial test is far past any threshold) alerts."""
    settings = fast_settings()
    rng = np.random.default_rng(6)
    st = PROBE.sample(1, 600, rng)
    world.add(st.scores[0], st.correct[0])  # the reference
    now = utcnow()
    run_calibrate(world.factory, settings, now)
    run_detect(world.factory, settings, now)
    bad = PROBE.sample(1, 126, rng, d=PROBE.d_for_disagreement(0.3))
    assert 0.27 < float(bad.disagree.mean()) < 0.33
    world.add(bad.scores[0], bad.correct[0])
    res = run_detect(world.factory, settings, now + timedelta(minutes=1))
    by = {(s.detector, s.window.get("source")): s for s in res.signals}
    assert by[("cusum_disagreement", "human")].status == "firing", by[("cusum_disagreement", "human")].summary
    with world.factory() as s:
        assert "probe_disagreement_drift" in {a.rule for a in s.scalars(select(Alert).where(Alert.state == "firing"))}
