"""The scorer and the spot checks share one loaded copy of a served model, safely, until a redeploy."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace

from PIL import Image

from monitor.adapter.shared import shared_vlm
from monitor.probe.factory import make_scorer
from monitor.spotcheck.job import _check, load_adapters
from storage.db import session_factory
from tests.probe.conftest import deploy_with_probe, redeploy


def test_scorer_and_spot_checks_share_one_model_copy(engine, db_url, tmp_path, llava_dir, llava, synpope_items):
    sessions = session_factory(engine)
    deploy, _, settings = deploy_with_probe(tmp_path, llava_dir, llava, sessions, storage={"url": db_url},
                                            spotcheck={"k": 4, "max_new_tokens": 4})
    scorer = make_scorer("tiny-llava", settings.models["tiny-llava"], settings, sessions)
    spot = load_adapters(settings, {"tiny-llava"})["tiny-llava"]
    assert spot is scorer.adapter  # one copy of the weights in this process, not two

    # used from two job threads at once (the daemon's scheduler does that), each gets exactly
    # what it gets alone: the scorer's early-exit hooks and image cache never leak into a spot check
    items = synpope_items[:6]
    cands = [SimpleNamespace(id=it.sample_id, prompt=it.prompt, answer=it.answer) for it in items]
    images = [Image.open(io.BytesIO(it.image)).convert("RGB") for it in items]
    want_scores = [r.p_correct for r in scorer.score(items)]
    want_checks = [_check(spot, img, c, settings).stats.agreement for img, c in zip(images, cands)]
    got_scores: list[list[float]] = []
    got_checks: list[list[float]] = []
    errors: list[BaseException] = []

    def scoring() -> None:
        try:
            for _ in range(3):
                got_scores.append([r.p_correct for r in scorer.score(items)])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def checking() -> None:
        try:
            for _ in range(2):
                got_checks.append([_check(spot, img, c, settings).stats.agreement for img, c in zip(images, cands)])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=scoring), threading.Thread(target=checking)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert got_scores == [want_scores] * 3
    assert got_checks == [want_checks] * 2

    # new weights under the same folder: the next load is a new copy, for both users
    redeploy(deploy)
    fresh = load_adapters(settings, {"tiny-llava"})["tiny-llava"]
    assert fresh is not spot
    assert shared_vlm(deploy, device="cpu", dtype="float32") is fresh
