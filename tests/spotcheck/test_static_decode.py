"""The static-cache decoder gives the dynamic-cache decoder's tokens and logits."""

from __future__ import annotations

import pytest
import torch

from monitor.spotcheck.sampler import sample_shared_prefill
from monitor.spotcheck.static_decode import StaticDecoder


def _both(model, ids, extra, decoder, eos, n=6, k=5, seeds=(3, 4, 5, 6, 7)):
    kw = dict(k=k, temperature=1.0, max_new_tokens=n, seeds=list(seeds), eos_token_ids=[eos], record_logits=True)
    return sample_shared_prefill(model, ids, extra, **kw), sample_shared_prefill(model, ids, extra, decode=decoder, **kw)


@pytest.mark.parametrize("which", ["llama", "llava"])
def test_static_cache_eager_equals_dynamic(which, llama, llava):
    if which == "llama":
        model, ids, extra, eos = llama, torch.tensor([[0, 5, 6, 2, 3]]), {}, 1
    else:
        model, _, ids, extra = llava
        eos = 3
    dec = StaticDecoder(model, compile=False, bucket=16)
    for _ in range(2):  # the second call re-uses the pooled cache
        ref, got = _both(model, ids, extra, dec, eos)
        assert got.tokens == ref.tokens and got.finished == ref.finished
        for a, b in zip(ref.step_logits, got.step_logits):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert len(dec._caches) == 1


@pytest.mark.gpu
def test_compiled_static_decoder_on_cuda():
    from tests.spotcheck.conftest import tiny_llama

    model = tiny_llama(vocab=64, init=0.2).cuda()
    ids = torch.tensor([[0, 5, 6, 2, 3]], device="cuda")
    dec = StaticDecoder(model, compile=True, bucket=64)
    ref, got = _both(model, ids, {}, dec, 1, n=8)
    assert got.tokens == ref.tokens
    for a, b in zip(ref.step_logits, got.step_logits):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
