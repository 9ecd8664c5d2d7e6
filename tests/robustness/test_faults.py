"""Fault injection on real processes: after each fault nothing accepted is lost, nothing is stored or
acknowledged twice, and the same component recovers without a restart (scenarios in
tests/robustness/faults.py, also run by bench/robustness.py)."""

from __future__ import annotations

import pytest

from tests.robustness import faults


def _check(fig: dict) -> None:
    assert fig["recovered"], fig
    for key in ("samples_lost", "samples_duplicated", "deliveries_lost", "deliveries_duplicated"):
        assert fig.get(key, 0) == 0, fig


def test_spool_disk_full_loses_no_accepted_sample_and_recovers(tmp_path, engine):
    fig = faults.spool_disk_full(tmp_path, engine)
    _check(fig)
    assert fig["refused_while_full"] > 0 and fig["samples_stored"] == fig["samples_accepted"] > 60, fig


def test_shipper_kill9_between_storage_commit_and_cursor(tmp_path, engine):
    fig = faults.shipper_kill9_before_cursor(tmp_path, engine)
    _check(fig)
    assert fig["killed_by_sigkill"] and fig["stored_when_killed"] == 50 and fig["samples_stored"] == 120, fig


def test_webhook_receiver_that_hangs_resets_and_answers_500(tmp_path, engine):
    fig = faults.webhook_receiver_hostile(tmp_path, engine)
    _check(fig)
    assert fig["answers"]["hang"] == fig["answers"]["reset"] == 3 and fig["answers"]["500"] >= 3, fig


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["pg_killed_while_shipping", "pg_killed_while_scoring", "pg_killed_while_delivering"])
def test_postgres_connections_killed(name, tmp_path, pg_server):
    from storage.db import make_engine
    from tests.daemon.helpers import postgres_db

    with postgres_db() as url:
        engine = make_engine(url)
        try:
            fig = faults.SCENARIOS[name][0](tmp_path, engine)
        finally:
            engine.dispose()
    _check(fig)
    assert fig["connections_terminated"] > 0, fig
