"""The shared-prefill sampler against the naive paths and the exact distribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from monitor.spotcheck.sampler import decode_streams, prefill, sample_shared_prefill

PROMPT = torch.tensor([[0, 5, 6, 2, 3]])
EOS = 1


def _naive_stream(model, ids, extra, seed, n, eos, temperature=1.0):
    """One HF generate call at batch 1 with the global RNG seeded: the '10 separate calls' path."""
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), **extra, do_sample=True, temperature=temperature,
        top_k=None, top_p=None, max_new_tokens=n, output_logits=True, return_dict_in_generate=True,
        eos_token_id=eos, pad_token_id=0,
    )  # fmt: skip
    return out.sequences[0, ids.shape[1] :].tolist(), [x[0] for x in out.logits]


def _strip(tokens, eos):
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _adapter_inputs(name, tmp_path_factory):
    """Model, prompt ids and kwargs through the model adapter (its chat template and processor)."""
    from PIL import Image

    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir
    from monitor.spotcheck.job import prompt_inputs

    if name == "qwen2_vl":
        from tests.test_adapter import build_tiny_qwen2_vl

        path, size = build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen2-vl"), 56
    else:
        path, size = fixture_dir(name), 64
    ad = load_vlm(path, device="cpu")
    ids, extra = prompt_inputs(ad, Image.new("RGB", (size, size), (200, 30, 30)), "is there a cat?")
    return ad.model, ids, extra, ad.tokenizer.eos_token_id


@pytest.mark.parametrize("which", ["llama", "tiny-llava", "tiny-paligemma", "qwen2_vl"])
def test_same_rng_gives_the_naive_paths_tokens_and_logits(which, llama, tmp_path_factory):
    if which == "llama":
        model, ids, extra, eos = llama, PROMPT, {}, EOS
    else:
        model, ids, extra, eos = _adapter_inputs(which, tmp_path_factory)
    seeds = [11, 12, 13, 14, 15]
    got = sample_shared_prefill(
        model, ids, extra, k=len(seeds), temperature=1.0, max_new_tokens=6, seeds=seeds,
        eos_token_ids=[eos], record_logits=True,
    )  # fmt: skip
    for i, s in enumerate(seeds):
        tokens, logits = _naive_stream(model, ids, extra, s, 6, eos)
        assert got.tokens[i] == _strip(tokens, eos)
        assert got.step_logits[i].shape[0] == len(got.tokens[i]) + int(got.finished[i])
        for step, ref in enumerate(logits[: got.step_logits[i].shape[0]]):
            torch.testing.assert_close(got.step_logits[i][step], ref.float(), atol=1e-5, rtol=0)


def _exact_two_token_probs(model, ids, temperature=1.0):
    """P(first two generated tokens) from full forward passes, EOS ending a sequence early."""
    with torch.inference_mode():
        p1 = torch.softmax(model(ids).logits[0, -1].double() / temperature, -1)
        v = p1.numel()
        probs = {(EOS,): float(p1[EOS])}
        seqs = torch.cat([ids.repeat(v, 1), torch.arange(v).view(v, 1)], dim=1)
        p2 = torch.softmax(model(seqs).logits[:, -1].double() / temperature, -1)
    for a in range(v):
        if a == EOS:
            continue
        for b in range(v):
            probs[(a, b)] = float(p1[a] * p2[a, b])
    return probs


def _key(tokens, finished):
    return tuple(tokens[:2]) if len(tokens) >= 2 else (*tokens, EOS)


def _goodness_of_fit(counts: Counter, probs: dict) -> float:
    n = sum(counts.values())
    keys = sorted(probs, key=lambda k: -probs[k])
    exp = np.array([probs[k] * n for k in keys])
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    assert sum(counts.get(k, 0) for k in keys) == n, "a drawn sequence is outside the support"
    rare = exp < 5  # pool small cells so the chi-square approximation holds
    exp = np.append(exp[~rare], exp[rare].sum())
    obs = np.append(obs[~rare], obs[rare].sum())
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def test_shared_prefill_draws_from_the_exact_two_token_distribution(llama):
    n = 3000
    probs = _exact_two_token_probs(llama, PROMPT)
    out = sample_shared_prefill(
        llama, PROMPT, k=n, temperature=1.0, max_new_tokens=2, seeds=list(range(7000, 7000 + n)),
        eos_token_ids=[EOS],
    )  # fmt: skip
    counts = Counter(_key(t, f) for t, f in zip(out.tokens, out.finished))
    assert _goodness_of_fit(counts, probs) > 0.01
    # the same test rejects a sampler at the wrong temperature: it has the power to fail
    hot = sample_shared_prefill(
        llama, PROMPT, k=n, temperature=1.6, max_new_tokens=2, seeds=list(range(9000, 9000 + n)),
        eos_token_ids=[EOS],
    )  # fmt: skip
    assert _goodness_of_fit(Counter(_key(t, f) for t, f in zip(hot.tokens, hot.finished)), probs) < 0.01


def test_shared_prefill_matches_num_return_sequences(llama):
    n = 3000
    out = sample_shared_prefill(
        llama, PROMPT, k=n, temperature=1.0, max_new_tokens=2, seeds=list(range(n)), eos_token_ids=[EOS]
    )
    torch.manual_seed(1234)
    ref = llama.generate(
        PROMPT, attention_mask=torch.ones_like(PROMPT), do_sample=True, temperature=1.0, top_k=None, top_p=None,
        max_new_tokens=2, num_return_sequences=n, eos_token_id=EOS, pad_token_id=0,
    )[:, PROMPT.shape[1] :].tolist()  # fmt: skip
    a = Counter(_key(t, f) for t, f in zip(out.tokens, out.finished))
    b = Counter(_key(_strip(t, EOS), EOS in t) for t in ref)
    keys = sorted(set(a) | set(b))
    table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]])
    table = table[:, table.sum(0) >= 10]  # drop near-empty cells
    assert stats.chi2_contingency(table).pvalue > 0.01


def test_prefill_runs_once_at_batch_one(llava):
    """The language model sees the prompt once; generate(num_return_sequences=10) runs it 10 times."""
    model, _, ids, extra = llava
    prompt_rows = []

    def hook(module, args, kwargs, out):
        emb = kwargs.get("inputs_embeds")
        if emb is not None and emb.shape[1] > 1:  # a prefill (decode steps feed one token)
            prompt_rows.append(emb.shape[0])

    h = model.model.language_model.register_forward_hook(hook, with_kwargs=True)
    try:
        sample_shared_prefill(model, ids, extra, k=10, temperature=1.0, max_new_tokens=4, seeds=list(range(10)))
        assert prompt_rows == [1]
        prompt_rows.clear()
        model.generate(input_ids=ids, **extra, do_sample=True, max_new_tokens=4, num_return_sequences=10)
        assert prompt_rows == [10]  # the naive path pays ten prompt passes
    finally:
        h.remove()


def test_out_of_memory_splits_the_streams_and_keeps_the_answers(llama):
    seen = []

    def small_device(model, pre, gens, params):
        seen.append(len(gens))
        if len(gens) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return decode_streams(model, pre, gens, params)

    seeds = list(range(100, 110))
    ref = sample_shared_prefill(llama, PROMPT, k=10, temperature=1.0, max_new_tokens=5, seeds=seeds, eos_token_ids=[EOS])
    got = sample_shared_prefill(
        llama, PROMPT, k=10, temperature=1.0, max_new_tokens=5, seeds=seeds, eos_token_ids=[EOS], decode=small_device
    )
    assert got.tokens == ref.tokens and got.finished == ref.finished
    assert got.oom_splits == 2 and max(seen[2:]) <= 3
    with pytest.raises(ValueError, match="one seed per stream"):
        sample_shared_prefill(llama, PROMPT, k=3, temperature=1.0, max_new_tokens=2, seeds=[1])


def test_other_errors_are_not_swallowed(llama):
    def broken(model, pre, gens, params):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        sample_shared_prefill(llama, PROMPT, k=4, temperature=1.0, max_new_tokens=2, seeds=[1, 2, 3, 4], decode=broken)


def test_min_new_tokens_forces_the_answer_length(llama):
    out = sample_shared_prefill(
        llama, PROMPT, k=20, temperature=1.0, max_new_tokens=6, min_new_tokens=6, seeds=list(range(20)),
        eos_token_ids=[EOS],
    )  # fmt: skip
    assert all(len(t) == 6 for t in out.tokens)
    greedy = sample_shared_prefill(llama, PROMPT, k=3, temperature=0.0, max_new_tokens=4, seeds=[1, 2, 3])
    assert greedy.tokens[0] == greedy.tokens[1] == greedy.tokens[2]
    pre = prefill(llama, PROMPT)
    assert pre.length == PROMPT.shape[1] and pre.logits.shape == (8,)
