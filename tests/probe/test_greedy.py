"""Batched greedy labelling answers equal HF greedy ``generate``, one prompt at a time."""

from monitor.probe.greedy import greedy_answers


def test_batched_greedy_matches_generate(llava, synpope_items):
    from monitor.probe.samples import open_image

    prompts = [(open_image(it.image), it.prompt + (" please" * (i % 3))) for i, it in enumerate(synpope_items)]
    encs = [llava.encode(img, p) for img, p in prompts]
    got = greedy_answers(llava, encs, max_new_tokens=6, batch_size=4)
    want = [llava.generate(img, p, max_new_tokens=6) for img, p in prompts]
    assert got == [w.strip() for w in want]
    assert any(len(w.split()) > 1 for w in want)  # multi-token answers exercise the loop
