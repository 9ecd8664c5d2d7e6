"""Demo preparation: fixture model present, database migrated, an active probe, a config file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

if TYPE_CHECKING:
    from monitor.config import Settings

__all__ = ["ensure_fixture", "ensure_probe", "write_mixed_samples", "write_config", "Ports"]

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


def ensure_fixture(name: str, say: Say) -> Path:
    """The shipped fixture folder; built (trained) first only if it is missing."""
    from monitor.fixtures.registry import built_fixtures, fixture_dir, fixture_family

    built = built_fixtures()
    if name in built:
        return built[name]
    from monitor.fixtures.train import train_fixture

    say(f"fixture {name} is missing: building it (one-time; takes a few minutes on CPU)")
    train_fixture(fixture_family(name), fixture_dir(name), progress=lambda m: logger.info("%s", m))
    return fixture_dir(name)


def ensure_probe(url: str, model: str, model_dir: Path, workdir: Path, plan: Any, say: Say) -> dict[str, Any]:
    """Activate a probe for ``model`` trained on labelled SynPOPE data, unless one is active."""
    from monitor.probe.artifact import load_artifact
    from monitor.probe.registry import active_probe, register_probe
    from storage.db import make_engine, session_factory

    engine = make_engine(url, password_env=None)
    sessions = session_factory(engine)
    try:
        with sessions() as s:
            row = active_probe(s, model)
            if row is not None:
                say(f"probe {row.version} is active for {model}: reusing it")
                return {"version": row.version, "trained": False, "metrics": row.metrics}
        from monitor.probe.train import TrainOptions, train_probe

        from monitor.demo.tasks import format_mix

        data = workdir / "probe-data"
        say(f"no active probe for {model}: training one on {plan.probe_train_n} labelled SynPOPE "
            f"'{plan.base_split}' samples ({format_mix(plan.tasks)})")
        write_mixed_samples(plan.tasks, plan.base_split, plan.probe_train_n, plan.seed + 7, data, model)
        art = train_probe(model_dir, data / "samples.jsonl", workdir / "probes" / model,
                          TrainOptions(progress=False, seed=plan.seed, bootstrap=200))
        with sessions() as s:
            row = register_probe(s, model, load_artifact(art.path), activate=True)
            s.commit()
        calib = (art.meta.metrics or {}).get("calib", {})
        say(f"probe {art.meta.version}: layer {art.meta.layer}, pooling {art.meta.pooling}, "
            f"held-out AUROC {calib.get('auroc', float('nan')):.3f}")
        return {"version": art.meta.version, "trained": True, "metrics": json.loads(json.dumps(art.meta.metrics, default=str))}
    finally:
        engine.dispose()


def write_mixed_samples(mix: Any, split: str, n: int, seed: int, out: Path, model: str) -> Path:
    """An honest SynPOPE samples file of ``n`` examples in the task ``mix`` (one ``generate`` per
    task, as many of each as the demo's task draw gives; each line's ``meta.task`` picks its judge)."""
    import random

    from monitor.synpope import SAMPLES_FILE, generate

    from monitor.demo.traffic import task_order

    order = task_order(mix, n, f"probe:{split}:{seed}")
    records: list[dict[str, Any]] = []
    for task in dict.fromkeys(order):
        records += generate(split, order.count(task), seed=seed, out=out, model=model, task=task)
    random.Random(f"demo-probe-shuffle:{seed}").shuffle(records)  # tasks interleaved, as served
    path = out / SAMPLES_FILE
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    return path


class Ports:
    def __init__(self) -> None:
        from monitor.demo.services import free_port

        self.server = free_port()
        self.proxy = free_port()
        self.api = free_port()


def write_config(workdir: Path, url: str, model: str, model_dir: Path, ports: Ports, plan: Any,
                 webhook_url: str | None = None) -> Path:
    """The config the demo's processes share (every key a real user would set, nothing hidden)."""
    cfg = {
        "log_level": "INFO",
        "storage": {"url": url},
        "models": {model: {"path": str(model_dir)}},
        "scoring": {"batch_size": 16, "device": "cpu"},
        "spotcheck": {"rate": 0.05},
        "calibration": {"window": "1m", "rolling_n": 200, "min_labels": plan.min_labels,
                        "reference_n": plan.reference_n, "bootstrap": 200},
        "detect": {"horizon": plan.detect_horizon},
        "alerts": {"channels": [{"name": "demo-webhook", "kind": "webhook", "url": webhook_url}] if webhook_url else []},
        "proxy": {"listen": f"127.0.0.1:{ports.proxy}", "upstream_url": f"http://127.0.0.1:{ports.server}",
                  "sample_rate": 1.0},
        "spool": {"dir": str(workdir / "spool"), "ship_interval_seconds": 1.0},
        "api": {"listen": f"127.0.0.1:{ports.api}"},
        "daemon": {"score_interval_seconds": 1.0, "spotcheck_interval_seconds": 3.0,
                   "calibrate_interval_seconds": 4.0, "detect_interval_seconds": 2.0,
                   "deliver_interval_seconds": 2.0, "report_interval_minutes": 600.0,
                   "retention_interval_minutes": 1.0, "job_time_budget_seconds": 20.0,
                   "shutdown_timeout_seconds": 15.0, "report_dir": str(workdir / "report")},
    }
    path = workdir / "vlmwatch.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


REFERENCE_PREFIX = "demo-ref-"


def ingest_reference(url: str, model: str, model_dir: Path, plan: Any, say: Say) -> tuple[Any, Any] | None:
    """A labelled reference set, as a team would pin one from a validation set: SynPOPE samples of
    the stable split in the traffic's task mix, answered by the served model itself, with ground-truth labels, time-stamped
    before the live traffic. Returns its (start, end), or None when it is already stored."""
    import io
    from datetime import timedelta

    from sqlalchemy import func, select

    from monitor.adapter import load_vlm
    from monitor.demo.tasks import format_mix, max_tokens_for
    from monitor.demo.traffic import mixed_examples
    from monitor.synpope import judge
    from storage.db import make_engine, session_factory
    from storage.models import Sample, utcnow
    from storage.records import SampleRecord
    from storage.repo_samples import ingest_samples

    engine = make_engine(url, password_env=None)
    sessions = session_factory(engine)
    try:
        with sessions() as s:
            have = s.scalar(select(func.count()).select_from(Sample).where(Sample.id.like(REFERENCE_PREFIX + "%")))
        if have:
            return None
        say(f"answering {plan.reference_n} labelled '{plan.base_split}' samples ({format_mix(plan.tasks)}) "
            f"with the model for the reference")
        ad = load_vlm(model_dir, device="cpu")
        t0 = utcnow() - timedelta(minutes=3)  # just before the live traffic, never inside it
        records = []
        for i, ex in enumerate(mixed_examples(plan.tasks, plan.reference_n, plan.base_split, plan.seed + 303)):
            buf = io.BytesIO()
            ex.image.save(buf, format="PNG")
            task = ex.meta["task"]
            (gen,), _ = ad.generate_detailed(ex.image, ex.prompt, max_new_tokens=max_tokens_for(task))
            records.append(SampleRecord(
                id=f"{REFERENCE_PREFIX}{i:05d}", model=model, prompt=ex.prompt, answer=gen.text,
                ts=t0 + timedelta(milliseconds=100 * i), image=buf.getvalue(), label=judge(task, gen.text, ex.truth).correct,
                # as served with logprobs; no meta "task": the live traffic carries none either, and the
                # input-drift job compares that category between the reference and live windows
                meta={"demo": "reference", "answer_logprobs": gen.token_logprobs},
            ))
        with sessions.begin() as s:
            ingest_samples(s, records, label_source="ground_truth")
        return records[0].ts, records[-1].ts + timedelta(seconds=1)
    finally:
        engine.dispose()


def pin_reference(url: str, settings: Settings, model: str, window: tuple[Any, Any], say: Say, timeout: float = 300.0) -> None:
    """Once the daemon has scored the reference set, pin it as the probe's reference."""
    import time

    from sqlalchemy import func, select

    from monitor.calibration.reference import set_reference
    from storage.db import make_engine, session_factory
    from storage.models import Sample

    engine = make_engine(url, password_env=None)
    sessions = session_factory(engine)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with sessions() as s:
                left = s.scalar(select(func.count()).select_from(Sample).where(
                    Sample.id.like(REFERENCE_PREFIX + "%"), Sample.status == "pending"))
            if not left:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not score the reference set within {timeout:.0f}s ({left} left)")
            time.sleep(1.0)
        with sessions() as s:
            ref = set_reference(s, settings, model, window[0], window[1])
            s.commit()
            human = (ref.stats or {}).get("human", {})
        say(f"reference pinned: {human.get('n')} labelled samples, probe disagrees with "
            f"{human.get('disagreements')} of them")
    finally:
        engine.dispose()
