"""Early-exit scoring on the real tiny LLaVA: same hidden state as the full pass, no later layers run."""

import numpy as np
import pytest

from monitor.probe.extract import buckets, run_pass
from monitor.probe.scorer import ProbeScorer, ScorerOptions, captured_answer_prob
from monitor.probe.stale import ProbeStaleError
from tests.probe.conftest import make_artifact


def _hidden(llava):
    return llava.model.config.get_text_config().hidden_size


@pytest.fixture()
def artifact(tmp_path, llava):
    return make_artifact(tmp_path / "probe", llava.fingerprint, _hidden(llava), llava.num_layers, layer=2)


def _count_decoder_calls(llava):
    from monitor.adapter.families import decoder_layers

    calls = [0] * llava.num_layers
    handles = []
    for i, mod in enumerate(decoder_layers(llava.model)):
        def hook(*_a, i=i):
            calls[i] += 1
        handles.append(mod.register_forward_hook(hook))
    return calls, handles


def test_early_exit_equals_full_pass_at_the_probe_layer(llava, artifact, synpope_items):
    scorer = ProbeScorer(llava, artifact, served_name="tiny-llava", options=ScorerOptions(batch_size=4))
    encs = scorer.encode(synpope_items)
    calls, handles = _count_decoder_calls(llava)
    try:
        early = run_pass(llava, encs, [2], ["answer", "prompt_last", "answer_mean"], stop_at=2, batch_size=4)
        assert calls[2:] == [0, 0] and calls[1] > 0  # layers 3 and 4 never ran
        full = run_pass(llava, encs, list(range(llava.num_layers + 1)), ["answer", "prompt_last", "answer_mean"],
                        stop_at=None, logits=True, batch_size=9)
    finally:
        for h in handles:
            h.remove()
    for pooling in ("answer", "prompt_last", "answer_mean"):
        np.testing.assert_allclose(early.features[pooling][:, 0], full.features[pooling][:, 2], atol=1e-5, rtol=0)
    # and the scorer's p_correct is the head on exactly that state
    got = np.array([r.p_correct for r in scorer.score(synpope_items)])
    want = artifact.head.predict(full.features["answer"][:, 2])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.std() > 1e-4  # the samples differ: the comparison is not trivially true


def test_scorer_results_keep_input_order_across_length_buckets(llava, artifact, synpope_items):
    lengths = [e.length for e in ProbeScorer(llava, artifact, served_name="m").encode(synpope_items)]
    assert len(set(lengths)) > 1
    assert [i for b in buckets(lengths, 2) for i in b] != list(range(len(lengths)))  # buckets reorder
    batched = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(batch_size=2)).score(synpope_items)
    single = [ProbeScorer(llava, artifact, served_name="m").score([it])[0] for it in synpope_items]
    for b, s in zip(batched, single):
        assert b.p_correct == pytest.approx(s.p_correct, abs=1e-5)
        assert b.attn_entropy == pytest.approx(s.attn_entropy, abs=1e-5)
        assert 0 < b.attn_topk_mass <= 1 and b.latency_ms > 0


def test_answer_prob_from_captured_logprobs_or_full_pass(llava, artifact, synpope_items):
    items = synpope_items[:3]
    early = ProbeScorer(llava, artifact, served_name="m").score(items)
    assert all(r.answer_prob is None for r in early)  # no LM head in the early-exit pass, nothing captured
    full = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(full_pass=True)).score(items)
    for e, f in zip(early, full):
        assert 0 < f.answer_prob < 1
        assert f.p_correct == pytest.approx(e.p_correct, abs=1e-5)
    from dataclasses import replace

    captured = replace(items[0], meta={"logprobs": {"content": [{"token": "yes", "logprob": -0.25}]}})
    assert ProbeScorer(llava, artifact, served_name="m").score([captured])[0].answer_prob == pytest.approx(np.exp(-0.25))
    assert captured_answer_prob({"answer_logprobs": [-1.0, -3.0]}) == pytest.approx(np.exp(-2.0))
    assert captured_answer_prob({"answer_logprobs": []}) is None


def test_torch_and_onnx_head_backends_agree(llava, artifact, synpope_items):
    a = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(head_backend="onnx")).score(synpope_items)
    b = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(head_backend="torch")).score(synpope_items)
    assert max(abs(x.p_correct - y.p_correct) for x, y in zip(a, b)) < 1e-5


def test_scorer_refuses_a_probe_of_another_model(tmp_path, llava):
    other = make_artifact(tmp_path / "p", "f" * 64, _hidden(llava), llava.num_layers)
    with pytest.raises(ProbeStaleError, match="stale"):
        ProbeScorer(llava, other, served_name="m")


def test_image_feature_cache_skips_the_vision_tower_for_seen_images(llava, artifact, synpope_items):
    from dataclasses import replace

    # three questions per image: the second and third reuse the first one's pixels
    items = [replace(it, image=synpope_items[i // 3 * 3].image) for i, it in enumerate(synpope_items)]
    plain = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(image_cache_size=0, batch_size=4))
    cached = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(image_cache_size=8, batch_size=4))
    tiny = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(image_cache_size=2, batch_size=4))
    vision_calls = []
    handle = llava.model.model.vision_tower.register_forward_hook(lambda m, a, o: vision_calls.append(a[0].shape[0]))
    try:
        want = plain.score(items)
        n_plain = sum(vision_calls)
        vision_calls.clear()
        got = cached.score(items)
        n_cached, misses = sum(vision_calls), cached.image_cache.misses
        again = cached.score(items[:3])
        tiny.score(items)
    finally:
        handle.remove()
    assert n_plain == len(items)
    assert n_cached == misses == 3  # one pass through the tower per distinct image
    assert len(cached.image_cache) == 3 and cached.image_cache.hits == len(items) - 3 + 3
    assert len(tiny.image_cache) == 2  # the LRU stays within its bound
    for a, b in zip(want, got):
        assert a.p_correct == pytest.approx(b.p_correct, abs=1e-5)
        assert a.attn_entropy == pytest.approx(b.attn_entropy, abs=1e-5)
    assert again[0].p_correct == pytest.approx(want[0].p_correct, abs=1e-5)
    assert "get_image_features" not in vars(llava.model.model)  # the wrapper is gone after the pass


def test_samples_with_and_without_images_are_batched_apart(llava, artifact, synpope_items):
    from dataclasses import replace

    items = [replace(it, image=None) if i % 2 else it for i, it in enumerate(synpope_items)]
    batched = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(batch_size=8)).score(items)
    single = [ProbeScorer(llava, artifact, served_name="m").score([it])[0] for it in items]
    for b, s in zip(batched, single):
        assert b.p_correct == pytest.approx(s.p_correct, abs=1e-5)
    assert batched[1].attn_entropy is None and batched[0].attn_entropy is not None  # no image, no map
    assert buckets([3, 1, 2, 5], 2, ["a", "b", "a", "b"]) == [[2, 0], [1, 3]]


def test_paligemma_scoring_with_the_image_cache(tmp_path, synpope_items):
    from dataclasses import replace

    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir

    pg = load_vlm(fixture_dir("tiny-paligemma"), device="cpu", dtype="float32")
    art = make_artifact(tmp_path / "p", pg.fingerprint, pg.model.config.get_text_config().hidden_size, pg.num_layers,
                        layer=1, pooling="prompt_last")
    items = [replace(it, image=synpope_items[i % 3].image) for i, it in enumerate(synpope_items)]
    plain = ProbeScorer(pg, art, served_name="p", options=ScorerOptions(image_cache_size=0, batch_size=4)).score(items)
    scorer = ProbeScorer(pg, art, served_name="p", options=ScorerOptions(image_cache_size=8, batch_size=4))
    cached = scorer.score(items)
    assert scorer.image_cache.misses == 3 and scorer.image_cache.hits == len(items) - 3
    for a, b in zip(plain, cached):
        assert a.p_correct == pytest.approx(b.p_correct, abs=1e-5)
        assert a.attn_topk_mass == pytest.approx(b.attn_topk_mass, abs=1e-5)


def test_vision_embedding_is_the_projector_output_pooled_over_the_image_tokens(llava, artifact, synpope_items):
    """No second pass: the scorer's ``vision_embedding`` is the decoder input (layer 0) at the image
    tokens, averaged — what a separate full forward reads there — and in input order across buckets."""
    scorer = ProbeScorer(llava, artifact, served_name="m", options=ScorerOptions(batch_size=2))
    got = [r.vision_embedding for r in scorer.score(synpope_items)]
    encs = scorer.encode(synpope_items)
    for enc, vec in zip(encs, got):
        full = llava.forward([enc], layers=[0], stop_at=0).hidden[0][0]
        want = full[enc.image_mask[: full.shape[0]]].mean(0).numpy()
        assert vec is not None and vec.shape == want.shape
        np.testing.assert_allclose(vec, want, atol=1e-5)
    assert np.std(np.stack(got), axis=0).mean() > 1e-4  # different images, different embeddings
