"""schemathesis against the API's own /openapi.json on a real server: no 5xx, every 4xx says what
was wrong, nothing stored from a refused request (both backends)."""

from __future__ import annotations

from tests.api.helpers import serve_api
from tests.robustness.api_fuzz import fuzz_api

CASES = 8  # per operation and generation mode; bench/robustness.py runs more


def test_every_operation_against_its_schema(engine):
    for client in serve_api(engine):
        res = fuzz_api(str(client.base_url).rstrip("/"), engine, CASES)
    assert not res.problems, "\n".join(res.problems[:10])
    assert len(res.by_operation) >= 7 and res.cases >= 7 * CASES, res.summary()
    # the negative cases reached validation on every operation that takes input
    refused = {op for op, seen in res.by_operation.items() if any(k.startswith("4") for k in seen)}
    assert {"POST /v1/samples", "POST /v1/labels", "GET /v1/alerts"} <= refused, res.summary()
