"""The fuzz-and-fault suite's figures, written to ``bench/results/robustness.json``.

Runs the scenarios of ``tests/robustness`` (the same code the tests run, with more cases): fuzz
cases per parser and where each ended, atheris (coverage-guided) inputs over all of them, the parsed records stored or rejected on each backend,
schemathesis cases per API operation and their answers, each fault scenario's samples accepted /
stored / lost / duplicated and deliveries expected / made / duplicated, and the proxy's p99 for
well-behaved clients while hostile ones attack it. Every lost and duplicated count must be 0: the
script exits 1 otherwise. PostgreSQL at ``$VLMWATCH_TEST_PG_URL`` (default: the test server);
without one the PostgreSQL half is recorded as skipped.

    nice -n 10 python bench/robustness.py [--fuzz-cases 1000] [--api-cases 40]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "robustness.json"


@contextlib.contextmanager
def _databases(tmp: Path) -> Iterator[dict[str, Any]]:
    """{backend: engine} of fresh, migrated databases (PostgreSQL only when reachable)."""
    from storage.db import make_engine, upgrade
    from tests.conftest import _pg_unavailable
    from tests.daemon.helpers import postgres_db

    url = f"sqlite:///{tmp / 'robustness.db'}"
    upgrade(url)
    engines = {"sqlite": make_engine(url)}
    with contextlib.ExitStack() as stack:
        if _pg_unavailable() is None:
            engines["postgres"] = make_engine(stack.enter_context(postgres_db()))
        try:
            yield engines
        finally:
            for e in engines.values():
                e.dispose()


def _fuzz(tmp: Path, cases: int, engines: dict[str, Any]) -> dict[str, Any]:
    from storage.db import session_factory
    from storage.records import SampleRecord
    from storage.repo_labels import add_labels
    from storage.repo_samples import ingest_isolated
    from tests.robustness.fuzz import MAX_IMAGE_BYTES, PARSERS, run

    out: dict[str, Any] = {}
    for name in PARSERS:
        t0 = time.perf_counter()
        res = run(name, cases, tmp)
        out[name] = {**res.summary(), "seconds": round(time.perf_counter() - t0, 2)}
        if name not in ("samples_file_line", "chat_request_body", "chat_answer_body", "labels_file_line"):
            continue
        stored: dict[str, Any] = {}
        for backend, engine in engines.items():
            if name == "labels_file_line":
                labels = [dataclasses.replace(r, sample_id=r.sample_id and f"{r.sample_id}-{backend}{i}",
                                              response_id=r.response_id and f"{r.response_id}-{backend}{i}")
                          for i, r in enumerate(res.records)]
                ingest_isolated(session_factory(engine), [SampleRecord(id=r.sample_id, model="m", prompt="p", answer="a")
                                                          for r in labels if r.sample_id])
                with session_factory(engine).begin() as s:
                    lr = add_labels(s, labels)
                stored[backend] = {"records": len(labels), "stored": lr.inserted, "rejected": len(lr.rejected),
                                   "unaccounted": len(labels) - lr.inserted - len(lr.rejected)}
                continue
            recs = [dataclasses.replace(r, id=f"bench-{name}-{i}") for i, r in enumerate(res.records)]
            ir = ingest_isolated(session_factory(engine), recs, max_image_bytes=MAX_IMAGE_BYTES)
            stored[backend] = {"records": len(recs), "stored": len(ir.inserted), "rejected": len(ir.rejected),
                               "unaccounted": len(recs) - len(ir.inserted) - len(ir.rejected)}
        out[name]["storage"] = stored
        print(f"fuzz {name}: {out[name]}", flush=True)
    return out


def _schemathesis(cases: int, engines: dict[str, Any]) -> dict[str, Any]:
    from tests.api.helpers import serve_api
    from tests.robustness.api_fuzz import fuzz_api

    out = {}
    for backend, engine in engines.items():
        for client in serve_api(engine):
            res = fuzz_api(str(client.base_url).rstrip("/"), engine, cases)
        out[backend] = {**res.summary(), "problem_examples": res.problems[:5]}
        print(f"schemathesis {backend}: {res.cases} cases, {len(res.problems)} problems", flush=True)
    return out


def _faults(tmp: Path, engines: dict[str, Any]) -> dict[str, Any]:
    from storage import failopen
    from tests.robustness.faults import SCENARIOS

    failopen.capture = True  # the delivery scenario counts the database errors it provoked
    out: dict[str, Any] = {}
    for name, (fn, pg_only) in SCENARIOS.items():
        for backend, engine in engines.items():
            if pg_only and backend != "postgres":
                continue
            t0 = time.perf_counter()
            fig = fn(tmp / f"{name}-{backend}", engine)
            out[f"{name}[{backend}]"] = {**fig, "seconds": round(time.perf_counter() - t0, 2)}
            print(f"fault {name}[{backend}]: {fig}", flush=True)
    unexpected = list(failopen.captured)
    failopen.capture = False
    if unexpected:
        out["unexpected_swallowed_errors"] = [repr(e)[:300] for e in unexpected]
    return out


def _bad_counts(results: dict[str, Any]) -> list[str]:
    bad = []
    for name, fig in results["faults"].items():
        if not isinstance(fig, dict):
            bad.append(name)
            continue
        for key, v in fig.items():
            if (key.endswith("_lost") or key.endswith("_duplicated")) and v != 0:
                bad.append(f"{name}.{key}={v}")
        if fig.get("recovered") is False:
            bad.append(f"{name} did not recover")
    for name, fig in results["fuzz"].items():
        for backend, st in fig.get("storage", {}).items():
            if st["unaccounted"]:
                bad.append(f"fuzz {name}[{backend}]: {st['unaccounted']} records neither stored nor rejected")
    for backend, fig in results["schemathesis"].items():
        if fig["problems"]:
            bad.append(f"schemathesis[{backend}]: {fig['problems']} problems")
    if results["proxy_hostile_clients"]["well_behaved_failed"]:
        bad.append("well-behaved proxy clients failed")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz-cases", type=int, default=1000, help="hypothesis cases per parser (default 1000)")
    ap.add_argument("--api-cases", type=int, default=40,
                    help="schemathesis cases per operation and mode, positive and negative (default 40)")
    ap.add_argument("--atheris-runs", type=int, default=500_000,
                    help="coverage-guided inputs over all parsers (default 500000)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from tests.robustness.hostile_proxy import proxy_hostile_clients

    results: dict[str, Any] = {
        "benchmark": "robustness",
        "description": "the fuzz-and-fault suite of tests/robustness with more cases: every parser of outside "
                       "input, the API against its own OpenAPI schema, faults on real processes, hostile proxy "
                       "clients",
        "machine": machine_info(),
        "params": {"fuzz_cases_per_parser": args.fuzz_cases, "api_cases_per_operation_and_mode": args.api_cases,
                   "atheris_runs": args.atheris_runs},
        "proxy_p99_bound": "bench/proxy_overhead.py's target: p99 added <= 1.5 ms on a quiet machine; compare "
                           "well_behaved_p99_added_ms with the machine's load_average_at_start",
    }
    with tempfile.TemporaryDirectory() as d, _databases(Path(d)) as engines:
        tmp = Path(d)
        results["backends"] = sorted(engines)
        results["fuzz"] = _fuzz(tmp, args.fuzz_cases, engines)
        from tests.robustness.test_atheris import run_atheris

        results["atheris"] = run_atheris(tmp / "atheris" / "corpus", args.atheris_runs, timeout=1200)
        print(f"atheris: {results['atheris']}", flush=True)
        results["schemathesis"] = _schemathesis(args.api_cases, engines)
        results["faults"] = _faults(tmp, engines)
        results["proxy_hostile_clients"] = proxy_hostile_clients(tmp / "proxy")
        print(f"proxy: {results['proxy_hostile_clients']}", flush=True)
    bad = _bad_counts(results)
    results["all_lost_and_duplicated_zero"] = not bad
    results["violations"] = bad
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}; violations: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
