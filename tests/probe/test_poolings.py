"""The per-token poolings of #12 (``answer_stats``, ``answer_stats_lp``) on the real tiny LLaVA:
what they hold, that the daemon's scorer computes them (early exit, or the full pass where the
log-probabilities are read), that the sweep can pick them, and that the one-token poolings of
yes/no answers are unchanged by their presence."""

import numpy as np
import pytest
import torch

from monitor.probe.extract import needs_full_pass, pool, probe_pass_args, run_pass
from monitor.probe.scorer import ProbeScorer, ScorerOptions
from tests.probe.conftest import make_artifact

OLD = ("answer", "prompt_last", "answer_mean")


def _stats(x):
    a = x[1:]
    return np.concatenate([a.mean(0), a.min(0), a.max(0), a[-1]])


def test_pool_answer_stats_on_known_rows():
    kept = torch.tensor([[9.0, 9.0], [1.0, -2.0], [3.0, 4.0], [-1.0, 0.0]])  # row 0: last prompt token
    emb = torch.tensor([[7.0, 7.0], [0.5, 0.0], [0.0, 1.0], [2.0, 2.0]])
    got = pool(kept, "answer_stats", embedded=emb).numpy()
    want = np.concatenate([[1.0, 2.0 / 3], [-1.0, -2.0], [3.0, 4.0], [-1.0, 0.0],
                           [2.5 / 3, 1.0], [0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    lp = pool(kept, "answer_stats_lp", embedded=emb, logprobs=torch.tensor([-0.1, -2.0, -0.3])).numpy()
    np.testing.assert_allclose(lp[:-2], want, rtol=1e-6)
    np.testing.assert_allclose(lp[-2:], [-0.8, -2.0], rtol=1e-6)


def test_pool_refuses_what_it_cannot_compute():
    kept = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="layer-0 states"):
        pool(kept, "answer_stats")
    with pytest.raises(ValueError, match="log-probability of each of the 2"):
        pool(kept, "answer_stats_lp", embedded=kept, logprobs=torch.zeros(1))
    with pytest.raises(ValueError, match="needs the served answer"):
        pool(kept[:1], "answer_stats", embedded=kept[:1])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(kept, "answer_max")
    assert probe_pass_args(2, "answer_stats") == {"stop_at": 2, "logits": False}
    assert probe_pass_args(2, "answer_stats_lp") == {"stop_at": None, "logits": True}
    assert not needs_full_pass("answer_mean")


def test_pass_features_match_the_hidden_states_and_log_probs(llava, synpope_items, tmp_path):
    scorer = ProbeScorer(llava, make_artifact_for(llava, "answer", tmp_path), served_name="m")
    encs = scorer.encode(synpope_items)
    L = llava.num_layers
    full = run_pass(llava, encs, list(range(L + 1)), [*OLD, "answer_stats", "answer_stats_lp"], stop_at=None,
                    logits=True, batch_size=4)
    h = llava.model.config.get_text_config().hidden_size
    out = llava.forward(encs, layers=[0, 2], stop_at=None, logits=True,
                        positions=[[e.prompt_last, *e.answer_positions] for e in encs])
    for i in range(len(encs)):
        k2, k0 = out.hidden[2][i].numpy(), out.hidden[0][i].numpy()
        want = np.concatenate([_stats(k2), _stats(k0)])
        np.testing.assert_allclose(full.features["answer_stats"][i, 2], want, atol=1e-5)
        lps = out.answer_logprobs[i].numpy()
        np.testing.assert_allclose(full.features["answer_stats_lp"][i, 2], [*want, lps.mean(), lps.min()], atol=1e-5)
    assert full.features["answer_stats"].shape == (len(encs), L + 1, 8 * h)
    assert full.features["answer_stats_lp"].shape == (len(encs), L + 1, 8 * h + 2)
    # early exit at layer 2 gives the same answer_stats; answer_stats_lp refuses it
    early = run_pass(llava, encs, [2], ["answer_stats"], stop_at=2, batch_size=3)
    np.testing.assert_allclose(early.features["answer_stats"][:, 0], full.features["answer_stats"][:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="needs the full pass"):
        run_pass(llava, encs, [2], ["answer_stats_lp"], stop_at=2)


def test_one_token_poolings_are_unchanged_beside_the_new_ones(llava, synpope_items, tmp_path):
    encs = ProbeScorer(llava, make_artifact_for(llava, "answer", tmp_path), served_name="m").encode(synpope_items)
    one_token = [i for i, e in enumerate(encs) if len(e.answer_positions) == 1]
    assert one_token and len(one_token) < len(encs)  # yes/no answers and longer ones
    alone = run_pass(llava, encs, [1, 3], list(OLD), stop_at=3, batch_size=4)
    beside = run_pass(llava, encs, [1, 3], [*OLD, "answer_stats"], stop_at=3, batch_size=4)
    for p in OLD:
        np.testing.assert_array_equal(alone.features[p], beside.features[p])
    # one token: answer and answer_mean are that token, and its four statistics are all equal to it
    f = beside.features
    np.testing.assert_allclose(f["answer"][one_token], f["answer_mean"][one_token], atol=1e-6)
    h = f["answer"].shape[-1]
    for q in range(4):
        np.testing.assert_allclose(f["answer_stats"][one_token, :, q * h:(q + 1) * h], f["answer"][one_token], atol=1e-6)


def make_artifact_for(llava, pooling, tmp):
    h = llava.model.config.get_text_config().hidden_size
    size = {"answer_stats": 8 * h, "answer_stats_lp": 8 * h + 2}.get(pooling, h)
    return make_artifact(tmp / "probe", llava.fingerprint, size, llava.num_layers, layer=2, pooling=pooling)


def _decoder_calls(llava):
    from monitor.adapter.families import decoder_layers

    calls = [0] * llava.num_layers
    handles = [mod.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, mod in enumerate(decoder_layers(llava.model))]
    return calls, handles


@pytest.mark.parametrize("pooling", ["answer_stats", "answer_stats_lp"])
def test_the_daemon_scorer_scores_multi_token_answers(llava, synpope_items, tmp_path, pooling):
    art = make_artifact_for(llava, pooling, tmp_path)
    scorer = ProbeScorer(llava, art, served_name="m", options=ScorerOptions(batch_size=4))
    calls, handles = _decoder_calls(llava)
    try:
        res = scorer.score(synpope_items)
    finally:
        for hd in handles:
            hd.remove()
    full = needs_full_pass(pooling)
    assert (calls[2:] == [0, 0]) is not full  # early exit at the probe layer unless the log-probs are read
    encs = scorer.encode(synpope_items)
    feats = run_pass(llava, encs, [2], [pooling], stop_at=None, logits=True, batch_size=9).features[pooling][:, 0]
    got = np.array([r.p_correct for r in res])
    np.testing.assert_allclose(got, art.head.predict(feats), atol=1e-5)
    assert got.std() > 1e-4
    # the full pass reads the answer probability exactly, at no extra cost; early exit cannot
    assert all((r.answer_prob is not None) is full for r in res)


def test_the_sweep_picks_answer_stats_when_the_evidence_is_in_one_token():
    """Correct iff no answer token carries a 'bad' direction: the mean dilutes it, the min keeps it."""
    from monitor.probe.sweep import make_splits, sweep

    rng = np.random.default_rng(3)
    n, h, t = 900, 8, 6
    y = rng.random(n) < 0.7
    tokens = rng.normal(size=(n, t, h))
    bad = rng.integers(0, t, n)
    tokens[~y, bad[~y], 0] -= 4.0  # one token of each wrong answer
    kept = np.concatenate([rng.normal(size=(n, 1, h)), tokens], axis=1)
    feats = {
        "answer_mean": tokens.mean(1)[:, None],
        "answer_stats": np.stack([pool(torch.from_numpy(k), "answer_stats", embedded=torch.from_numpy(k)).numpy()
                                  for k in kept])[:, None],
    }
    res = sweep(feats, y, make_splits(y), layers=[1])
    assert res.pooling == "answer_stats"
    assert res.curves["answer_stats"][0] > res.curves["answer_mean"][0] + 0.05
