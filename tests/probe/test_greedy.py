"""Batched greedy labelling answers equal HF greedy ``generate``, one prompt at a time."""

import pytest

from monitor.probe.greedy import greedy_answers


@pytest.fixture(scope="module")
def babbling_llava(tmp_path_factory):
    """An untrained tiny LLaVA: its greedy answers run on for several tokens."""
    from monitor.adapter import load_vlm
    from monitor.fixtures.build import build_untrained

    return load_vlm(build_untrained("llava", tmp_path_factory.mktemp("untrained"), seed=1), device="cpu")


@pytest.mark.parametrize("which", ["trained", "untrained"])
def test_batched_greedy_matches_generate(which, llava, babbling_llava, synpope_items):
    from monitor.probe.samples import open_image

    ad = llava if which == "trained" else babbling_llava
    prompts = [(open_image(it.image), it.prompt + (" please" * (i % 3))) for i, it in enumerate(synpope_items)]
    encs = [ad.encode(img, p) for img, p in prompts]
    got = greedy_answers(ad, encs, max_new_tokens=6, batch_size=4)
    want = [ad.generate(img, p, max_new_tokens=6).strip() for img, p in prompts]
    assert got == want
    if which == "untrained":
        assert any(len(w.split()) > 1 for w in want)  # multi-token answers exercise the loop
    else:
        assert set(want) <= {"yes", "no"}
