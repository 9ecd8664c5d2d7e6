"""The proxy under hostile clients (scenario in tests/robustness/hostile_proxy.py, also run by
bench/robustness.py, which records the well-behaved clients' p99): it stays up, well-behaved
clients are all answered, and each hostile request reaches the upstream as a direct call would."""

from __future__ import annotations

from tests.robustness.hostile_proxy import proxy_hostile_clients


def test_hostile_clients_hurt_neither_the_proxy_nor_other_clients(tmp_path):
    fig = proxy_hostile_clients(tmp_path)
    assert fig["proxy_up_after"], fig
    assert fig["well_behaved_requests"] > 50 and fig["well_behaved_failed"] == 0, fig
    for name, case in fig["cases"].items():
        if "statuses" in case:
            assert case["same_bytes_to_client"] and case["same_requests_upstream"], (name, case)
    assert fig["cases"]["pipelined"]["statuses"] == [200, 200, 200]
    assert fig["cases"]["slowloris_headers"]["statuses"] == [200]
    assert fig["oversized_samples_dropped_as_too_large"] == 1, fig
