"""Reading the served tokens' log-probabilities out of chat completions (JSON and streamed)."""

from __future__ import annotations

import json
import math

import pytest

from collectors.exchange import answer_from_chunks, answer_from_json, answer_from_sse, token_logprobs


def _entries(*values):
    return {"content": [{"token": f"t{i}", "logprob": v, "bytes": [], "top_logprobs": []} for i, v in enumerate(values)]}


def _chunk(content, logprobs, index=0):
    return {"id": "c1", "choices": [{"index": index, "delta": {"content": content}, "logprobs": logprobs}]}


def test_json_answer_with_and_without_logprobs():
    resp = {"id": "r1", "choices": [{"index": 0, "message": {"content": "yes"}, "logprobs": _entries(-0.25, -1.5)}]}
    ans = answer_from_json(resp)
    assert (ans.text, ans.response_id, ans.logprobs) == ("yes", "r1", [-0.25, -1.5])
    resp["choices"][0]["logprobs"] = None
    assert answer_from_json(resp).logprobs is None


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 0.5, "x", None, True])
def test_unusable_logprob_values_bring_no_signal_but_keep_the_answer(bad):
    assert token_logprobs(_entries(-0.1, bad)) is None
    resp = {"choices": [{"message": {"content": "no"}, "logprobs": _entries(-0.1, bad)}]}
    assert answer_from_json(resp).text == "no" and answer_from_json(resp).logprobs is None


def test_streamed_logprobs_are_concatenated_for_choice_zero_only():
    chunks = [
        {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}]},
        _chunk("Yes", _entries(-0.5)),
        _chunk("Nope", _entries(-9.0), index=1),  # another choice (n=2): not ours
        _chunk(",", _entries(-0.25, -0.125)),
        {"id": "c1", "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    ]
    ans = answer_from_chunks(chunks)
    assert (ans.text, ans.logprobs) == ("Yes,", [-0.5, -0.25, -0.125])
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    assert answer_from_sse(sse) == ans


def test_a_stream_with_text_missing_its_logprobs_brings_none():
    assert answer_from_chunks([_chunk("Yes", _entries(-0.5)), _chunk(" there", None)]).logprobs is None
    assert answer_from_chunks([_chunk("Yes", _entries(-0.5)), _chunk(" x", _entries(float("nan")))]).logprobs is None
    assert answer_from_chunks([_chunk("Yes", None)]).logprobs is None


def test_the_system_fingerprint_is_kept_with_the_logprobs():
    from collectors.exchange import with_answer_meta

    resp = {"id": "r1", "system_fingerprint": "fp_abc", "choices": [{"message": {"content": "yes"}, "logprobs": _entries(-0.25)}]}
    assert with_answer_meta({"k": 1}, answer_from_json(resp)) == {"k": 1, "answer_logprobs": [-0.25], "system_fingerprint": "fp_abc"}
    chunks = [{**_chunk("Yes", _entries(-0.5)), "system_fingerprint": "fp_abc"}, _chunk(",", _entries(-0.25))]
    assert answer_from_chunks(chunks).system_fingerprint == "fp_abc"
    resp.pop("system_fingerprint")
    resp["choices"][0]["logprobs"] = None
    assert with_answer_meta({"k": 1}, answer_from_json(resp)) == {"k": 1}  # neither: meta unchanged
