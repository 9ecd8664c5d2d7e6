"""The default reference is created once, however many jobs ask for it at the same moment (both backends)."""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import delete, func, select

from monitor.calibration.reference import active_reference, ensure_default_reference
from monitor.detect.synthetic import BinormalProbe
from storage.models import ProbeVersion, Reference


def test_calibrate_and_detect_on_the_same_tick_make_one_active_default_reference(world, fast_settings):
    settings = fast_settings()
    st = BinormalProbe().sample(1, 120, np.random.default_rng(3))
    world.add(st.scores[0], st.correct[0])
    for attempt in range(3):
        start = threading.Barrier(2)
        got: list[int | None] = []
        failures: list[BaseException] = []

        def job() -> None:  # what run_calibrate and run_detect do for each active probe
            try:
                with world.factory() as s:
                    pv = s.get(ProbeVersion, world.pv_id)
                    start.wait(30)
                    ref = ensure_default_reference(s, settings, pv)
                    s.commit()
                    got.append(ref.id if ref is not None else None)
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=job) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        with world.factory() as s:
            active = s.scalar(select(func.count()).select_from(Reference).where(
                Reference.probe_version_id == world.pv_id, Reference.active.is_(True)))
            assert active == 1, f"attempt {attempt}: {active} active default references"
            only = active_reference(s, world.pv_id)
            assert got == [only.id, only.id] and only.stats["human"]["n"] == 120
            s.execute(delete(Reference))
            s.commit()
