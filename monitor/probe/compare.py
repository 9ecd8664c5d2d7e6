"""``probe compare``: every correctness signal on the same labelled samples, side by side.

Signals (higher = more likely correct):
- ``probe``: the probe's calibrated p_correct from the early-exit pass and the ONNX head;
- ``answer_prob``: probability of the served answer's tokens (geometric mean), full pass + LM head;
- ``attention_sharpness``: 1 - entropy / log(n) of the last prompt token's attention over image
  tokens at the probe layer (the negative control); ``attention_topk_mass`` alongside it;
- ``self_consistency`` (optional): agreement of K sampled answers with the served one
  (``monitor.spotcheck``; exact first-token distribution for one-token answers).

Each signal's ``cost_ms`` is the wall time per sample of the pass that produces it, run alone,
plus encoding (image preprocessing and tokenising, shared by all); ``compute_ms`` leaves the
encoding out, which is where early exit shows.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from monitor.calibration.metrics import paired_auroc_delta, signal_metrics
from monitor.probe.artifact import ProbeArtifact
from monitor.probe.extract import probe_pass_args, run_pass
from monitor.probe.runner import OnnxHeadRunner
from monitor.probe.samples import ProbeSample
from monitor.probe.stale import check_fresh

__all__ = ["compare_signals", "self_consistency_by_k", "write_report", "markdown_table"]

log = logging.getLogger(__name__)

SIGNAL_ORDER = ("probe", "answer_prob", "attention_sharpness", "attention_topk_mass", "self_consistency")


def _equivalence(sample: ProbeSample) -> Any:
    """A SynPOPE task's answer key (the same caption in another order is one answer), else None
    (the spot check's content-word default)."""
    from functools import partial

    from monitor.synpope.judges import answer_key

    task = sample.meta.get("task")
    return partial(answer_key, task) if task else None


def _spot_check(adapter: Any, sample: ProbeSample, k: int, temperature: float, eos: list[int],
                one_token: bool | None = None) -> Any:
    """The daemon's spot check of one sample's served answer: its prefill, K-sample decode and seeds."""
    from monitor.probe.samples import open_image
    from monitor.spotcheck.check import run_spot_check, stream_seeds
    from monitor.spotcheck.job import prompt_inputs

    ids, extra = prompt_inputs(adapter, open_image(sample.image), sample.prompt)  # as the daemon's spot check does
    return run_spot_check(adapter.model, adapter.tokenizer, ids.to(adapter.device),
                          {n: v.to(adapter.device) for n, v in extra.items()}, sample.answer or "", k=k,
                          temperature=temperature, max_new_tokens=12, seeds=stream_seeds(sample.id, k),
                          eos_token_ids=eos, one_token=one_token, equivalence=_equivalence(sample))


def _self_consistency(adapter: Any, samples: Sequence[ProbeSample], k: int, temperature: float,
                      progress: bool) -> np.ndarray:
    """Agreement of K sampled answers with the served one; a sample of a SynPOPE task groups
    answers by that task's judge (``answer_key``: the same caption in another order is one answer)."""
    from monitor.adapter.generation import eos_ids
    from monitor.progress import track

    eos = sorted(eos_ids(adapter.model, adapter.tokenizer))
    out = np.empty(len(samples))
    for i, s in enumerate(track(list(samples), desc="self-consistency", unit="sample", enabled=progress)):
        out[i] = _spot_check(adapter, s, k, temperature, eos).stats.agreement
    return out


def self_consistency_by_k(adapter: Any, samples: Sequence[ProbeSample], ks: Sequence[int] = (3, 5, 10), *,
                          temperature: float = 1.0, n_boot: int = 1000, seed: int = 0, timing_n: int = 100,
                          progress: bool = False) -> tuple[dict[str, Any], list[list[str]]]:
    """Self-consistency of free-form answers at several K, and what a check costs at each.

    Every sample gets ``max(ks)`` sampled answers from the spot check (one shared prefill, its
    per-sample stream seeds, every answer decoded); agreement over the first K of them is the
    K-sample signal, so every K sees the same draws. Per K: the signal's metrics with bootstrap CIs,
    the share of samples at agreement exactly 0 and 1, and ``ms_per_check``, the mean wall time of
    a spot check run at that K on the first ``timing_n`` samples (the K values interleaved, so load
    from other work falls on all alike). Returns (rows by K as strings, the sampled answers).
    """
    from monitor.adapter.generation import eos_ids
    from monitor.progress import track
    from monitor.spotcheck.answers import group_stats

    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"K values must be >= 1, got {ks}")
    if not samples:
        raise ValueError("self-consistency needs samples")
    eos = sorted(eos_ids(adapter.model, adapter.tokenizer))
    y = np.array([bool(s.label) for s in samples])
    t0 = time.perf_counter()
    draws = [_spot_check(adapter, s, ks[-1], temperature, eos, one_token=False).answers
             for s in track(list(samples), desc=f"self-consistency (K={ks[-1]})", unit="sample", enabled=progress)]
    draw_seconds = time.perf_counter() - t0
    spent = {k: 0.0 for k in ks}
    timed = list(samples)[: max(0, timing_n)]
    for s in timed:
        for k in ks:
            t0 = time.perf_counter()
            _spot_check(adapter, s, k, temperature, eos, one_token=False)
            spent[k] += time.perf_counter() - t0
    rows: dict[str, Any] = {}
    for k in ks:
        agree = np.array([group_stats(s.answer or "", d[:k], key=_equivalence(s)).agreement
                          for s, d in zip(samples, draws)])
        m = signal_metrics(agree, y, n_boot=n_boot, seed=seed).as_dict()
        rows[str(k)] = {**m, "k": k, "share_agreement_0": float((agree == 0).mean()),
                        "share_agreement_1": float((agree == 1).mean()),
                        "ms_per_check": 1000.0 * spent[k] / len(timed) if timed else None,
                        "timed_checks": len(timed), "_values": agree.tolist()}
    rows[str(ks[-1])]["ms_per_check_all"] = 1000.0 * draw_seconds / len(samples)
    return rows, draws


def compare_signals(
    adapter: Any,
    artifact: ProbeArtifact,
    samples: Sequence[ProbeSample],
    *,
    served_name: str = "",
    batch_size: int = 16,
    n_boot: int = 1000,
    bins: int = 10,
    self_consistency_k: int = 0,
    temperature: float = 1.0,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Signals and metrics as the ``probe compare --json`` document."""
    from monitor.probe.train import encode_samples

    meta = artifact.meta
    check_fresh(served_name or str(adapter.path), meta.version, meta.model_fingerprint, adapter.fingerprint)
    y = np.array([bool(s.label) for s in samples])
    t0 = time.perf_counter()
    encs = encode_samples(adapter, samples, progress)
    enc_ms = 1000.0 * (time.perf_counter() - t0) / len(samples)
    n = len(samples)

    t0 = time.perf_counter()
    probe_pass = run_pass(adapter, encs, [meta.layer], [meta.pooling], **probe_pass_args(meta.layer, meta.pooling),
                          batch_size=batch_size, progress=progress, desc="probe")
    runner = OnnxHeadRunner(artifact.onnx_path, artifact.head)
    p = runner(probe_pass.features[meta.pooling][:, 0])
    probe_ms = 1000.0 * (time.perf_counter() - t0) / n

    attn_layer = max(1, meta.layer)
    t0 = time.perf_counter()
    attn = run_pass(adapter, encs, [attn_layer], [], stop_at=attn_layer, attentions=True, batch_size=batch_size,
                    progress=progress, desc=f"attention (layer {attn_layer})")
    attn_ms = 1000.0 * (time.perf_counter() - t0) / n

    t0 = time.perf_counter()
    full = run_pass(adapter, encs, [adapter.num_layers], [], stop_at=None, logits=True, batch_size=batch_size,
                    progress=progress, desc="answer probability (full pass)")
    ans_ms = 1000.0 * (time.perf_counter() - t0) / n

    values: dict[str, tuple[np.ndarray, float]] = {
        "probe": (p, probe_ms),
        "answer_prob": (full.answer_prob, ans_ms),
        "attention_sharpness": (attn.attn_sharpness, attn_ms),
        "attention_topk_mass": (attn.attn_topk_mass, attn_ms),
    }
    if self_consistency_k > 0:
        t0 = time.perf_counter()
        sc = _self_consistency(adapter, samples, self_consistency_k, temperature, progress)
        values["self_consistency"] = (sc, 1000.0 * (time.perf_counter() - t0) / n)

    signals: dict[str, dict[str, Any]] = {}
    for name, (v, cost) in values.items():
        m = signal_metrics(v, y, n_boot=n_boot, bins=bins, seed=seed).as_dict()
        m["cost_ms"] = enc_ms + cost  # what scoring one sample from raw inputs costs
        m["compute_ms"] = cost  # the signal's own pass, inputs already encoded
        signals[name] = m
    if "self_consistency" in signals:
        signals["self_consistency"]["k"] = self_consistency_k  # samples per answer, from the K-sample decode
    delta, ci = paired_auroc_delta(p, full.answer_prob, y, n_boot=n_boot, seed=seed)
    signals["probe"]["delta_vs_answer_prob"] = delta
    signals["probe"]["delta_ci"] = list(ci)
    return {
        "signals": signals,
        "by_task": _by_task(samples, values, y, n_boot=n_boot, bins=bins, seed=seed),
        "n": n,
        "n_correct": int(y.sum()),
        "accuracy": float(y.mean()),
        "probe": {"version": meta.version, "layer": meta.layer, "pooling": meta.pooling,
                  "calibration": meta.calibration, "path": str(artifact.path)},
        "model": {"path": str(adapter.path), "family": adapter.family, "fingerprint": adapter.fingerprint},
        "attention_layer": attn_layer,
        "encode_ms": enc_ms,
        "bootstrap": n_boot,
        "bins": bins,
        "head_providers": runner.providers,
        "_values": {k: v.tolist() for k, (v, _) in values.items()} | {"label": y.astype(int).tolist()},
    }


MIN_TASK_N = 50  # fewer samples of a task give AUROC CIs too wide to read


def _by_task(samples: Sequence[ProbeSample], values: dict[str, tuple[np.ndarray, float]], y: np.ndarray, *,
             n_boot: int, bins: int, seed: int) -> dict[str, Any]:
    """Each signal's metrics on the samples of each SynPOPE task (``meta.task``), where a task has
    at least :data:`MIN_TASK_N` samples holding both outcomes; empty for a file without tasks."""
    tasks = np.array([str(s.meta.get("task", "")) for s in samples])
    out: dict[str, Any] = {}
    for task in sorted(set(tasks) - {""}):
        idx = np.flatnonzero(tasks == task)
        if len(idx) < MIN_TASK_N or y[idx].all() or not y[idx].any():
            out[task] = {"n": int(len(idx)), "accuracy": float(y[idx].mean()), "signals": None}
            continue
        out[task] = {
            "n": int(len(idx)), "accuracy": float(y[idx].mean()),
            "signals": {name: signal_metrics(v[idx], y[idx], n_boot=n_boot, bins=bins, seed=seed).as_dict()
                        for name, (v, _) in values.items()},
        }
    return out


def _fmt_ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_table(doc: dict[str, Any]) -> str:
    rows = [
        f"Signals vs correctness on {doc['n']} samples ({doc['n_correct']} correct, accuracy "
        f"{doc['accuracy']:.3f}); probe {doc['probe']['version']} (layer {doc['probe']['layer']}, "
        f"{doc['probe']['pooling']}); 95% bootstrap CIs ({doc['bootstrap']} resamples).",
        "",
        "| signal | AUROC | AUROC 95% CI | r_pb | r_pb 95% CI | ECE (width) | ECE (mass) | Brier | cost ms/sample | of which compute |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in SIGNAL_ORDER:
        m = doc["signals"].get(name)
        if m is None:
            continue
        rows.append(
            f"| {name} | {m['auroc']:.3f} | {_fmt_ci(m['auroc_ci'])} | {m['r_pb']:+.3f} | {_fmt_ci(m['r_pb_ci'])} "
            f"| {m['ece']:.3f} | {m['ece_equal_mass']:.3f} | {m['brier']:.3f} | {m['cost_ms']:.2f} | {m['compute_ms']:.2f} |"
        )
    pr = doc["signals"]["probe"]
    rows += ["", f"Probe − answer probability: ΔAUROC {pr['delta_vs_answer_prob']:+.3f}, paired-bootstrap 95% CI "
                 f"{_fmt_ci(pr['delta_ci'])}."]
    per_task = {t: r for t, r in doc.get("by_task", {}).items() if r["signals"]}
    if per_task:
        names = [n for n in SIGNAL_ORDER if n in doc["signals"]]
        rows += ["", "AUROC per task (95% CI):", "", "| task | n | accuracy | " + " | ".join(names) + " |",
                 "| --- | ---: | ---: | " + " | ".join("---" for _ in names) + " |"]
        for task, r in per_task.items():
            cells = [f"{r['signals'][n]['auroc']:.3f} {_fmt_ci(r['signals'][n]['auroc_ci'])}" for n in names]
            rows.append(f"| {task} | {r['n']} | {r['accuracy']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _figure(doc: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s in SIGNAL_ORDER if s in doc["signals"]]
    sig = doc["signals"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), dpi=110)
    ax = axes[0]
    au = [sig[s]["auroc"] for s in names]
    err = np.array([[sig[s]["auroc"] - sig[s]["auroc_ci"][0], sig[s]["auroc_ci"][1] - sig[s]["auroc"]] for s in names]).T
    ax.bar(names, au, yerr=err, capsize=4, color=["C0", "C1", "C2", "C2", "C3"][: len(names)])
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("AUROC (95% CI)")
    ax.set_title("AUROC for predicting correctness")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[1]
    r = [sig[s]["r_pb"] for s in names]
    err = np.array([[sig[s]["r_pb"] - sig[s]["r_pb_ci"][0], sig[s]["r_pb_ci"][1] - sig[s]["r_pb"]] for s in names]).T
    ax.bar(names, r, yerr=err, capsize=4, color=["C0", "C1", "C2", "C2", "C3"][: len(names)])
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_ylabel("point-biserial r (95% CI)")
    ax.set_title("correlation with correctness")
    ax.tick_params(axis="x", rotation=20)
    ax = axes[2]
    y = np.asarray(doc["_values"]["label"], float)
    for s, colour in (("probe", "C0"), ("answer_prob", "C1")):
        v = np.asarray(doc["_values"][s], float)
        order = np.argsort(v)
        groups = np.array_split(order, doc["bins"])
        ax.plot([v[g].mean() for g in groups], [y[g].mean() for g in groups], marker="o", color=colour,
                label=f"{s} (ECE mass {sig[s]['ece_equal_mass']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("predicted p(correct), equal-mass bins")
    ax.set_ylabel("observed accuracy")
    ax.set_title("reliability")
    ax.legend(fontsize=8, loc="upper left")
    d = sig["probe"]
    fig.suptitle(
        f"n={doc['n']} · probe layer {doc['probe']['layer']} ({doc['probe']['pooling']}) · "
        f"ΔAUROC probe − answer_prob {d['delta_vs_answer_prob']:+.3f} {_fmt_ci(d['delta_ci'])}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def write_report(doc: dict[str, Any], out_dir: str | Path, stem: str = "probe_compare") -> dict[str, Path]:
    """Write ``<stem>.json`` (without per-sample values), ``<stem>.md`` and ``<stem>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(public, indent=2, sort_keys=True) + "\n")
    paths["md"].write_text(markdown_table(doc))
    _figure(doc, paths["png"])
    log.info("wrote comparison report to %s", out)
    return paths
