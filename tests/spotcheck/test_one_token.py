"""The one-token path records the exact answer-token distribution from one forward pass."""

from __future__ import annotations

import pytest
import torch

from monitor.spotcheck.answers import normalize_answer
from monitor.spotcheck.check import exact_group_distribution, is_one_token_answer, run_spot_check, stream_seeds


def test_one_token_agreement_is_the_exact_probability(llava):
    model, proc, ids, extra = llava
    tok = proc.tokenizer
    assert is_one_token_answer(tok, "Yes.") and not is_one_token_answer(tok, "yes there is")
    res = run_spot_check(
        model, tok, ids, extra, "Yes.", k=10, temperature=1.0, max_new_tokens=8, seeds=stream_seeds("s1", 10),
        eos_token_ids=[tok.eos_token_id],
    )  # fmt: skip
    assert res.one_token and res.k == 0 and res.answers == []
    with torch.inference_mode():
        full = model(input_ids=ids, **extra).logits[0, -1].double()
    p = torch.softmax(full, -1)
    yes = [i for i in range(p.numel()) if normalize_answer(tok.decode([i], skip_special_tokens=True)) == "yes"]
    assert yes, "the fixture vocabulary has a yes token"
    assert res.stats.agreement == pytest.approx(float(p[yes].sum()), abs=1e-6)
    # majority = the group holding the most probability mass
    dist = exact_group_distribution(full, tok)
    assert sum(dist.values()) == pytest.approx(1.0, abs=1e-9)
    assert res.stats.majority_group == max(dist, key=dist.get)
    assert res.stats.agrees_with_majority == (max(dist, key=dist.get) == "yes")
    assert sum(res.stats.groups.values()) == pytest.approx(1.0, abs=1e-9)


def test_multi_token_answers_are_sampled(llava):
    model, proc, ids, extra = llava
    tok = proc.tokenizer
    res = run_spot_check(
        model, tok, ids, extra, "there is a red square", k=6, temperature=1.0, max_new_tokens=5,
        seeds=stream_seeds("s2", 6), eos_token_ids=[tok.eos_token_id],
    )  # fmt: skip
    assert not res.one_token and res.k == 6 and len(res.answers) == 6
    assert sum(res.stats.groups.values()) == 6
    assert res.compute_seconds > 0
    again = run_spot_check(
        model, tok, ids, extra, "there is a red square", k=6, temperature=1.0, max_new_tokens=5,
        seeds=stream_seeds("s2", 6), eos_token_ids=[tok.eos_token_id],
    )  # fmt: skip
    assert again.answers == res.answers  # seeded per sample id: reproducible
