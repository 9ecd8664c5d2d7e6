"""schemathesis against the API's own ``/openapi.json`` (shared by the tests and ``bench/robustness.py``;
imported as ``tests.robustness.api_fuzz``).

Every operation gets schema-valid (positive) and schema-violating (negative) cases over real HTTP.
Each answer is checked: no 5xx; a 4xx carries a JSON body that says what was wrong (a 422 names
each offending field by its location); and a refused request stores nothing (no new sample,
label, image, calibration window or alert row).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from storage.models import Alert, CalibrationWindow, Image, Label, Sample

__all__ = ["ApiFuzzResult", "fuzz_api"]

_TABLES = (Sample, Label, Image, CalibrationWindow, Alert)


@dataclass
class ApiFuzzResult:
    cases: int = 0
    by_operation: dict[str, Counter[str]] = field(default_factory=dict)  # "GET /x" -> {"2xx": n, "422": n}
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"cases": self.cases, "problems": len(self.problems),
                "operations": {op: dict(sorted(c.items())) for op, c in sorted(self.by_operation.items())}}


def _rows(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as c:
        return tuple(c.execute(select(func.count()).select_from(t)).scalar_one() for t in _TABLES)


def _explains(status: int, resp: httpx.Response) -> str | None:
    """Why a 4xx answer fails to say what was wrong, or None."""
    try:
        body = resp.json()
    except ValueError:
        return f"{status} without a JSON body: {resp.text[:120]!r}"
    if not isinstance(body, dict):
        return f"{status} body is not an object"
    if status == 422 and "fields" in body:
        bad = [f for f in body["fields"] if not isinstance(f, str) or ": " not in f or not f.split(": ", 1)[0]]
        return f"422 field errors without a location: {bad}" if bad or not body["fields"] else None
    text = body.get("error") or body.get("detail") or body.get("message")
    return None if text else f"{status} body names nothing: {body}"


def fuzz_api(base_url: str, engine: Engine, cases_per_operation: int, headers: dict[str, str] | None = None
             ) -> ApiFuzzResult:
    """Run positive and negative schemathesis cases against every operation of ``base_url``'s schema."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    result = ApiFuzzResult()
    with httpx.Client(base_url=base_url, timeout=30, headers=headers or {}) as client:
        for op_result in schema.get_all_operations():
            op = op_result.ok()
            name = f"{op.method.upper()} {op.path}"
            seen = result.by_operation.setdefault(name, Counter())
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=cases_per_operation, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(op.as_strategy(generation_mode=mode))
                def case(c: Any) -> None:
                    kw = c.as_transport_kwargs(base_url=base_url)
                    before = _rows(engine)
                    resp = client.request(kw["method"], kw["url"], params=kw.get("params"),
                                          headers={k: v for k, v in (kw.get("headers") or {}).items()
                                                   if k.lower() not in ("host", "content-length")},
                                          content=_content(kw))
                    status = resp.status_code
                    result.cases += 1
                    seen["2xx" if status < 300 else str(status)] += 1
                    problem = None
                    if status >= 500:
                        problem = f"{status}: {resp.text[:200]!r}"
                    elif 400 <= status < 500:
                        problem = _explains(status, resp)
                        if problem is None and _rows(engine) != before:
                            problem = f"{status} but rows changed {before} -> {_rows(engine)}"
                    if problem:
                        result.problems.append(f"{name} [{mode.value}] {kw['method']} {kw['url']} params={kw.get('params')} "
                                               f"body={_content(kw)[:200]!r}: {problem}")

                try:
                    case()
                except Unsatisfiable:  # nothing to violate (an operation without parameters or body)
                    continue
    return result


def _content(kw: dict[str, Any]) -> bytes:
    """The request body as bytes, whatever form schemathesis serialised it in."""
    import json

    if kw.get("data") is not None:
        data = kw["data"]
        return data if isinstance(data, bytes) else str(data).encode()
    if kw.get("json") is not None:
        return json.dumps(kw["json"]).encode()
    return b""
