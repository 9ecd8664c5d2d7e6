"""served_model_mismatch on real fixture recomputes: same weights in bf16 never fire, other weights do.

"Served" log-probabilities come from the tiny LLaVA run in bfloat16 (a bf16 production server)
and from a copy with other weights; the monitor's recompute is the fp32 scorer's full pass.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from monitor.fixtures.variants import perturbed_copy
from monitor.probe.extract import run_pass
from monitor.probe.scorer import ProbeScorer, ScorerOptions, captured_logprobs
from alerts.rules import SERVED_MODEL_MISMATCH
from monitor.probe.served_check import MismatchParams, ServedModelCheck, logprob_discrepancy
from tests.probe.conftest import make_artifact

SAME_WEIGHT_SAMPLES = 3000


def _answer(i: int) -> str:
    # low- and high-probability tokens both: yes/no regardless of the truth, and a multi-token answer
    return ("yes", "no", "no, there is not")[i % 3]


@pytest.fixture(scope="module")
def traffic():
    """SynPOPE questions with answers, as (image, prompt, answer)."""
    from monitor.synpope.generate import iter_examples

    return [(ex.image, ex.prompt, _answer(i)) for i, ex in enumerate(iter_examples("adversarial", SAME_WEIGHT_SAMPLES, seed=23))]


def _logprobs(adapter, traffic) -> list[list[float]]:
    encs = [adapter.encode(img, prompt, answer) for img, prompt, answer in traffic]
    out = run_pass(adapter, encs, [adapter.num_layers], ["answer"], stop_at=None, logits=True, batch_size=64)
    return out.answer_logprobs


@pytest.fixture(scope="module")
def recomputed(llava, traffic):
    return _logprobs(llava, traffic)


def test_same_weights_in_bf16_never_fire_over_3000_samples(llava_dir, traffic, recomputed):
    from monitor.adapter import load_vlm

    served = _logprobs(load_vlm(llava_dir, device="cpu", dtype="bfloat16"), traffic)
    check = ServedModelCheck("tiny-llava")
    ds = [check.observe_logprobs(s, r) for s, r in zip(served, recomputed)]
    assert check.incomparable == 0 and check.logprobs.checks == SAME_WEIGHT_SAMPLES
    d = np.array(ds)
    assert d.max() > 0  # bf16 really differs from fp32: the comparison is not trivially exact
    assert d.max() < MismatchParams().token_tolerance
    assert check.logprobs.exceeded == 0 and not check.firing
    assert check.verdict().status == "clear"


@pytest.mark.parametrize("scale", [0.3, 0.1])
def test_other_weights_fire_within_200_samples(llava_dir, traffic, recomputed, scale):
    n = 200
    served = _logprobs(perturbed_copy(llava_dir, scale), traffic[:n])
    check = ServedModelCheck("tiny-llava")
    fired_at = None
    for i, (s, r) in enumerate(zip(served, recomputed[:n])):
        check.observe_logprobs(s, r)
        if check.firing and fired_at is None:
            fired_at = i + 1
    assert fired_at is not None, f"{check.logprobs.exceeded} of {n} exceeded"
    assert check.verdict().status == "firing"


def test_cusum_fires_on_three_disagreements_and_resolves_after_clear_after_agreements():
    check = ServedModelCheck("m", MismatchParams(clear_after=5))
    agree, differ = [-0.1], [-3.0]
    check.observe_logprobs(differ, agree)
    check.observe_logprobs(differ, agree)
    assert not check.firing  # two in a row: 6.0 < 8
    check.observe_logprobs(differ, agree)
    assert check.firing
    for _ in range(4):
        check.observe_logprobs(agree, agree)
    assert check.firing
    check.observe_logprobs(agree, agree)
    assert not check.firing and check.logprobs.value == 0.0
    # token counts that differ are not evidence either way
    assert check.observe_logprobs([-0.1, -0.2], [-0.1]) is None and check.incomparable == 1


def test_log_odds_show_a_confident_token_moving():
    # p 0.9999 -> 0.999 is 9e-4 in log-prob but 2.3 in log-odds
    assert logprob_discrepancy([np.log(0.9999)], [np.log(0.999)]) == pytest.approx(2.3, abs=0.01)
    assert logprob_discrepancy([], []) is None


def test_mismatch_alert_fires_and_resolves_through_the_lifecycle(tmp_path):
    from alerts.builtin import report_served_mismatch
    from monitor.config import AlertsConfig
    from storage.db import make_engine, session_factory
    from storage.models import Alert, AlertDelivery
    from tests.daemon.helpers import sqlite_db

    sessions = session_factory(make_engine(sqlite_db(tmp_path)))
    check = ServedModelCheck("tiny-llava", MismatchParams(clear_after=3))
    for _ in range(3):
        check.observe_logprobs([-3.0], [-0.1])
    with sessions() as s:
        assert [t.event for t in report_served_mismatch(s, AlertsConfig(), check.verdict())] == ["firing"]
        s.commit()
        alert = s.query(Alert).one()
        assert (alert.rule, alert.severity, alert.state) == (SERVED_MODEL_MISMATCH.name, "critical", "firing")
        assert alert.metrics["logprob_exceeded"] == 3
    for _ in range(3):
        check.observe_logprobs([-0.1], [-0.1])
    with sessions() as s:
        assert [t.event for t in report_served_mismatch(s, AlertsConfig(), check.verdict())] == ["resolved"]
        s.commit()
        assert s.query(Alert).one().state == "resolved"
        assert s.query(AlertDelivery).count() == 0  # no channels configured


def test_scorer_recomputes_the_served_answer_for_its_share(llava, synpope_items):
    art = make_artifact(llava.path.parent / "probe-sc", llava.fingerprint,
                        llava.model.config.get_text_config().hidden_size, llava.num_layers)
    served = _logprobs(llava, [(_img(it.image), it.prompt, it.answer) for it in synpope_items])
    items = [type(it)(it.sample_id, it.model, it.prompt, it.answer, it.image, {"answer_logprobs": lp})
             for it, lp in zip(synpope_items, served)]
    every = ProbeScorer(llava, art, served_name="tiny-llava", options=ScorerOptions(recompute_share=1.0)).score(items)
    for res, lp in zip(every, served):
        np.testing.assert_allclose(res.recomputed_logprobs, lp, atol=1e-5)
    none = ProbeScorer(llava, art, served_name="tiny-llava").score(items)
    assert all(r.recomputed_logprobs is None for r in none)
    bare = ProbeScorer(llava, art, served_name="tiny-llava", options=ScorerOptions(recompute_share=1.0)).score(synpope_items)
    assert all(r.recomputed_logprobs is None for r in bare)  # nothing captured: nothing to compare
    assert captured_logprobs({"answer_logprobs": [-0.1, True]}) is None


def _img(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
