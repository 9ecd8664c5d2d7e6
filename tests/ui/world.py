"""A short real fixture run for the dashboard's browser tests (a helper, not a test module).

The bundled tiny LLaVA is served by ``vlmwatch fixture serve`` (the "production VLM"); a probe is
trained for it on labelled SynPOPE data and activated; ``vlmwatch daemon`` runs the real score,
spot-check, calibrate and detect jobs and serves the API (with a bearer token). Traffic is SynPOPE
questions asked of the server with the ``openai`` client, stored through ``POST /v1/samples`` and
labelled (3 of 4) through ``POST /v1/labels``, on two routes. Sample times are spread over the
past so that the calibration history has several windows at once:

* ``build()``: the stable phase (random and popular splits);
* ``shift()``: the shifted phase (adversarial split plus pixel noise), until an alert fires.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import yaml

from monitor.demo.services import Services, free_port
from monitor.synpope import judge

logger = logging.getLogger(__name__)

MODEL = "tiny-llava"
TOKEN = "ui-test-token-5f0c"  # the API token of the run (writes and the samples pages need it)
ROUTES = ("/pope/random", "/pope/popular")
STABLE_N = 160  # samples before the shift (80 per route)
SHIFTED_N = 160
SPACING = timedelta(seconds=9)  # sample times 9 s apart: 4-minute windows hold 26-27 samples
WINDOW = "4m"


@dataclass
class World:
    workdir: Path
    url: str = ""
    api: str = ""
    services: Services | None = None
    t0: datetime = field(default_factory=lambda: datetime.now(timezone.utc) - timedelta(minutes=52))
    sent: int = 0
    shifted: bool = False
    probe_version: str = ""

    # -- setup -----------------------------------------------------------------------------
    def build(self) -> "World":
        from storage.db import upgrade

        self.url = f"sqlite:///{self.workdir / 'vlmwatch.db'}"
        upgrade(self.url)
        from monitor.fixtures.registry import fixture_dir

        model_dir = fixture_dir(MODEL)
        server_port, api_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{api_port}"
        cfg = self._write_config(model_dir, api_port)
        svc = Services(self.workdir, cfg, env={"VLMWATCH_API_TOKEN": TOKEN})
        self.services = svc
        server = svc.add("vlm-server", svc.vlmwatch("fixture", "serve", "--model", str(model_dir), "--port",
                                                    str(server_port)), f"http://127.0.0.1:{server_port}/health")
        env = svc.child_env()
        server.start(env, self.workdir)  # loads while the probe trains
        self._train_probe(model_dir)
        daemon = svc.add("daemon", svc.vlmwatch("daemon"), f"{self.api}/healthz")
        daemon.start(env, self.workdir)
        server.wait_healthy(180)
        daemon.wait_healthy(180)
        self.server = f"http://127.0.0.1:{server_port}/v1"
        self._traffic(shifted=False, n=STABLE_N)
        self._wait_settled(STABLE_N)
        return self

    def _write_config(self, model_dir: Path, api_port: int) -> Path:
        cfg = {
            "log_level": "INFO",
            "storage": {"url": self.url, "keep_images": True},
            "models": {MODEL: {"path": str(model_dir)}},
            "scoring": {"batch_size": 16, "device": "cpu", "dtype": "float32"},
            "spotcheck": {"rate": 0.15, "k": 6, "max_new_tokens": 4},
            "calibration": {"window": WINDOW, "rolling_n": 60, "min_labels": 20, "reference_n": 60, "bootstrap": 100},
            "detect": {"horizon": 2000, "simulations": 300, "adwin_simulations": 20},
            "alerts": {"rules": [
                {"name": "probe_disagreement_drift", "detector": "cusum_disagreement", "severity": "critical"},
                {"name": "probe_calibration_drift", "detector": "cusum_residual", "severity": "warning"},
                {"name": "agreement_low", "detector": "metric", "source": "combined", "metric": "agreement", "op": "<", "threshold": 0.75,
                 "severity": "warning"}]},
            "spool": {"dir": str(self.workdir / "spool")},
            "api": {"listen": f"127.0.0.1:{api_port}", "token_env": "VLMWATCH_API_TOKEN"},
            "daemon": {"score_interval_seconds": 0.5, "spotcheck_interval_seconds": 1.0,
                       "calibrate_interval_seconds": 1.0, "detect_interval_seconds": 1.0,
                       "deliver_interval_seconds": 5.0, "report_interval_minutes": 600.0,
                       "retention_interval_minutes": 600.0, "job_time_budget_seconds": 20.0,
                       "shutdown_timeout_seconds": 15.0, "report_dir": str(self.workdir / "report")},
        }
        path = self.workdir / "vlmwatch.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def _train_probe(self, model_dir: Path) -> None:
        """A probe trained on 200 labelled SynPOPE samples, activated as if an hour ago."""
        import torch

        from monitor.probe.artifact import load_artifact
        from monitor.probe.registry import register_probe
        from monitor.probe.train import TrainOptions, train_probe
        from monitor.synpope import generate
        from storage.db import make_engine, session_factory

        torch.set_num_threads(1)
        data = self.workdir / "probe-data"
        generate("random", 200, seed=7, out=data, model=MODEL)
        art = train_probe(model_dir, data / "samples.jsonl", self.workdir / "probe",
                          TrainOptions(progress=False, bootstrap=100, layers="2,3,4"))
        engine = make_engine(self.url)
        with session_factory(engine)() as s:
            row = register_probe(s, MODEL, load_artifact(art.path), activate=True)
            row.activated_at = self.t0 - timedelta(minutes=5)  # the traffic below is stamped after it
            s.commit()
            self.probe_version = row.version
        engine.dispose()

    # -- traffic ---------------------------------------------------------------------------
    def _examples(self, shifted: bool, n: int) -> list[tuple[str, Any, str]]:
        from monitor.synpope import Shift, iter_examples

        if shifted:
            exs = list(iter_examples("adversarial", n, seed=202, shift=Shift(noise=0.45)))
            return [(ROUTES[i % 2], ex.image, ex.prompt, ex.truth) for i, ex in enumerate(exs)]  # type: ignore[misc]
        half = n // 2
        a = list(iter_examples("random", half, seed=101))
        b = list(iter_examples("popular", n - half, seed=102))
        out = []
        for i in range(n):
            ex = a[i // 2] if i % 2 == 0 else b[i // 2]
            out.append((ROUTES[i % 2], ex.image, ex.prompt, ex.truth))
        return out  # type: ignore[return-value]

    def _ask(self, client: Any, image: Any, prompt: str) -> tuple[str, str, list[float], str]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        r = client.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=4, logprobs=True,
            messages=[{"role": "user", "content": [{"type": "text", "text": prompt},
                                                   {"type": "image_url", "image_url": {"url": url}}]}])
        lps = [t.logprob for t in (r.choices[0].logprobs.content or [])] if r.choices[0].logprobs else []
        return r.id, r.choices[0].message.content or "", lps, url

    def _traffic(self, shifted: bool, n: int) -> None:
        import openai

        client = openai.OpenAI(base_url=self.server, api_key="unused", timeout=60, max_retries=0)
        examples = self._examples(shifted, n)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda ex: self._ask(client, ex[1], ex[2]), examples))
        samples, labels = [], []
        for j, ((route, _img, prompt, truth), (rid, answer, lps, url)) in enumerate(zip(examples, answers)):
            i = self.sent + j
            samples.append({"id": f"ui-{i:04d}", "ts": (self.t0 + i * SPACING).isoformat(), "model": MODEL,
                            "image": url, "prompt": prompt, "answer": answer, "response_id": rid, "route": route,
                            "meta": {"answer_logprobs": lps, "truth": truth, "shifted": shifted}})
            if i % 4 != 3:
                labels.append({"response_id": rid, "correct": judge("yesno", answer, truth).correct, "source": "ground_truth"})
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.api, headers=headers, timeout=60) as c:
            for k in range(0, len(samples), 40):
                r = c.post("/v1/samples", json={"samples": samples[k:k + 40]})
                assert r.status_code == 200 and r.json()["accepted"] == len(samples[k:k + 40]), r.text
            r = c.post("/v1/labels", json=labels)
            assert r.status_code == 200, r.text
        self.sent += n

    # -- waiting ---------------------------------------------------------------------------
    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        from storage.db import make_engine

        engine = make_engine(self.url)
        try:
            with engine.connect() as c:
                return [tuple(r) for r in c.execute(text(sql))]
        finally:
            engine.dispose()

    def count(self, sql: str) -> int:
        got = self.rows(sql)
        return int(got[0][0] or 0) if got else 0

    def _wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.workdir}")
            for svc in self.services.items if self.services else []:
                if svc.proc is not None and svc.proc.poll() is not None:
                    raise AssertionError(f"{svc.name} exited ({svc.proc.returncode}); see {svc.log_path}")
            time.sleep(0.5)

    def _wait_settled(self, n: int) -> None:
        self._wait(lambda: self.count("SELECT count(*) FROM scores") >= n, 180, f"{n} scores")
        self._wait(lambda: self.count("SELECT count(*) FROM samples WHERE spotcheck_status = 'pending'") == 0, 120,
                   "every sample's spot-check decision")
        last_label = self.count("SELECT max(id) FROM labels WHERE source = 'ground_truth'")
        self._wait(lambda: self.count("SELECT cursor FROM detector_states WHERE detector = 'calibrate'") >= last_label,
                   60, "the calibration history to catch up")
        self._wait(lambda: self.count("SELECT count(*) FROM detector_states WHERE detector = "
                                      "'cusum_disagreement:human' AND cursor >= " + str(last_label)) > 0,
                   60, "the detectors to consume the labels")

    def firing(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.api}/v1/alerts", params={"state": "firing"}, timeout=10).json()

    def shift(self) -> list[dict[str, Any]]:
        """The shifted traffic, then wait until an alert fires; returns the firing alerts."""
        if not self.shifted:
            self.shifted = True
            self._traffic(shifted=True, n=SHIFTED_N)
            self._wait_settled(STABLE_N + SHIFTED_N)
            self._wait(lambda: bool(self.firing()), 90, "an alert to fire after the shift")
        return self.firing()

    def close(self) -> None:
        if self.services is not None:
            codes = self.services.stop_all()
            logger.info("ui world services stopped: %s", json.dumps(codes))
