"""Spot-check window estimates weighted by 1 / inclusion probability vs unweighted, by simulation.

Writes ONLY ``summary.spotcheck_weighting`` (and nothing else) of bench/results/detection.json:
read, replace that key, write back, so the detector figures beside it are kept. For each
window metric: bias (mean error against the whole window's value, with its 95% CI) and the
coverage of the window's own 95% CI, for the weighted (Hajek) estimate, the plain mean of the
checks, and a uniform random sample of the same size as a control (monitor.spotcheck.simulation).

usage: nice -n 10 python bench/spotcheck_weighting.py [--windows 500] [--population 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine_info  # noqa: E402
from monitor.spotcheck.simulation import ESTIMATORS, simulate_windows  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "detection.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=500)
    ap.add_argument("--population", type=int, default=2000, help="scored samples per window")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = simulate_windows(a.windows, population=a.population, bootstrap=a.bootstrap, seed=a.seed)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["machine"] = machine_info()
    data = json.loads(a.out.read_text()) if a.out.exists() else {}
    data.setdefault("summary", {})["spotcheck_weighting"] = res
    a.out.write_text(json.dumps(data, indent=2) + "\n")
    for kind in ESTIMATORS:
        for metric, st in res[kind].items():
            lo, hi = st["bias_ci"]
            print(f"{kind:16s} {metric:10s} bias {st['bias']:+.4f} [{lo:+.4f}, {hi:+.4f}]  coverage {st['coverage']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
