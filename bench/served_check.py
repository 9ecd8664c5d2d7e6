"""The served-model check on the fixture LLaVA: same-weight noise against other weights.

"Served" answer log-probabilities come from the tiny LLaVA in bfloat16 (a bf16 production server,
same weights) and from copies whose tensors were moved by 3%, 10% and 30% of their spread (other
checkpoints, same tokenizer, ``monitor.fixtures.variants``); the monitor's recompute is the fp32
full pass over the same answers (SynPOPE adversarial questions, answers "yes" / "no" /
"no, there is not" in turn, so low- and high-probability tokens both occur). Per scenario: the
per-sample discrepancy (largest |Δ log-odds| over the answer's tokens), its share above the
tolerance, and the CUSUM of ``monitor.probe.served_check`` run over random orders of the samples:
the share of streams that fire and the checks until they do (``--orders`` permutations; a stream
is ``--stream`` checks, drawn with replacement). Samples until detection = checks /
``served_check.recompute_share``. Writes ``bench/results/served_check.json``.

Run: ``nice .venv/bin/python bench/served_check.py [--n 3000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import torch_machine_info  # noqa: E402

ANSWERS = ("yes", "no", "no, there is not")
SCALES = (0.03, 0.1, 0.3)


def _logprobs(adapter: Any, traffic: list[tuple[Any, str, str]]) -> list[list[float]]:
    from monitor.probe.extract import run_pass

    encs = [adapter.encode(img, prompt, answer) for img, prompt, answer in traffic]
    out = run_pass(adapter, encs, [adapter.num_layers], ["answer"], stop_at=None, logits=True, batch_size=64)
    return out.answer_logprobs or []


def _streams(ds: list[float], params: Any, orders: int, stream: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from monitor.probe.served_check import BernoulliCusum

    rng = np.random.default_rng(seed)
    exceed = np.asarray(ds) > params.token_tolerance
    delays: list[int] = []
    for _ in range(orders):
        cusum = BernoulliCusum(params.p0, params.p1, params.threshold)
        for i, x in enumerate(rng.choice(exceed, size=stream, replace=True)):
            cusum.update(bool(x))
            if cusum.crossed:
                delays.append(i + 1)
                break
    fired = len(delays) / orders
    return {
        "streams": orders, "checks_per_stream": stream, "fired_share": round(fired, 4),
        "median_checks_to_fire": float(np.median(delays)) if delays else None,
        "p90_checks_to_fire": float(np.quantile(delays, 0.9)) if len(delays) == orders else None,
    }  # fmt: skip


def _scenario(served: list[list[float]], recomputed: list[list[float]], params: Any, orders: int, stream: int) -> dict[str, Any]:
    import numpy as np

    from monitor.probe.served_check import logprob_discrepancy

    pairs = [logprob_discrepancy(s, r) for s, r in zip(served, recomputed)]
    ds = [d for d in pairs if d is not None]
    q = np.quantile(ds, [0.5, 0.9, 0.99, 1.0])
    return {
        "samples": len(pairs), "incomparable": len(pairs) - len(ds),
        "discrepancy_log_odds": {"median": round(float(q[0]), 4), "p90": round(float(q[1]), 4),
                                 "p99": round(float(q[2]), 4), "max": round(float(q[3]), 4)},
        "exceed_share": round(float(np.mean(np.asarray(ds) > params.token_tolerance)), 4),
        "cusum": _streams(ds, params, orders, stream, seed=len(ds)),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="same-weight samples (other weights: a third of them)")
    ap.add_argument("--orders", type=int, default=300, help="random stream orders per scenario")
    ap.add_argument("--stream", type=int, default=20_000, help="checks per same-weight stream (other weights: 200)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "served_check.json"))
    a = ap.parse_args()

    import torch

    from monitor.adapter import load_vlm
    from monitor.config import ServedCheckConfig
    from monitor.fixtures.registry import fixture_dir
    from monitor.fixtures.variants import perturbed_copy
    from monitor.probe.served_check import MismatchParams
    from monitor.synpope.generate import iter_examples

    load = os.getloadavg()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    path = fixture_dir("tiny-llava")
    cfg = ServedCheckConfig()
    params = MismatchParams.from_config(cfg)
    traffic = [(ex.image, ex.prompt, ANSWERS[i % 3]) for i, ex in enumerate(iter_examples("adversarial", a.n, seed=23))]
    recomputed = _logprobs(load_vlm(path, device="cpu", dtype="float32"), traffic)
    scenarios = {"same_weights_bf16": _scenario(_logprobs(load_vlm(path, device="cpu", dtype="bfloat16"), traffic),
                                                recomputed, params, a.orders, a.stream)}
    few = a.n // 3
    for scale in SCALES:
        served = _logprobs(perturbed_copy(path, scale), traffic[:few])
        scenarios[f"other_weights_{scale}"] = _scenario(served, recomputed[:few], params, a.orders, 200)
    doc = {
        "benchmark": "served_check",
        "model": "tiny-llava (monitor fp32 on CPU)",
        "params": {k: getattr(cfg, k) for k in type(cfg).model_fields},
        "samples_per_check": round(1 / cfg.recompute_share, 3),
        "scenarios": scenarios,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": torch_machine_info(torch.get_num_threads(), load),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(scenarios, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
