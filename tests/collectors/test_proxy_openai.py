"""The proxy driven by the official ``openai`` client against real upstreams on loopback.

Byte-for-byte: the canned upstream answers a given request with identical bytes, so a proxied
call must return exactly what a direct call returns (status, headers, body; SSE included).
"""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import openai
import pytest

from collectors.canned_upstream import ANSWER, ANSWER_LOGPROBS, response_id_for
from tests.collectors.helpers import chat_body, data_url, png_bytes


def _raw(base: str, body: dict, stream: bool) -> httpx.Response:
    client = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)
    if stream:
        with client.chat.completions.with_streaming_response.create(**body) as r:
            content = b"".join(r.http_response.iter_raw())
            return httpx.Response(r.http_response.status_code, headers=r.http_response.headers, content=content)
    r = client.chat.completions.with_raw_response.create(**body)
    return r.http_response


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_client_gets_identical_bytes_through_the_proxy(canned, make_proxy, png, stream):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = chat_body("Is there a cat in the image?", data_url(png), stream=stream)
    direct = _raw(f"http://127.0.0.1:{port}", body, stream)
    proxied = _raw(proxy.url, body, stream)
    assert proxied.status_code == direct.status_code == 200
    assert proxied.headers.raw == direct.headers.raw
    assert proxied.content == direct.content
    if stream:
        assert proxied.content.count(b"data: ") > 5 and proxied.content.endswith(b"data: [DONE]\n\n")
    # the upstream received the client's request unchanged both times
    assert srv.requests[-1] == srv.requests[-2]
    assert json.loads(srv.requests[-1]) == body

    samples = proxy.samples()
    assert len(samples) == 1
    s = samples[0]
    assert (s.model, s.prompt, s.answer, s.source) == ("llava-fixture", "Is there a cat in the image?", ANSWER, "proxy")
    assert s.response_id == response_id_for(srv.requests[-1])
    assert s.image is not None and s.image.data == png and s.image.format == "PNG"
    assert s.meta["stream"] is stream


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_served_logprobs_are_kept_in_the_sample(canned, make_proxy, png, stream):
    """With ``logprobs: true`` the answer's token log-probabilities land in ``meta.answer_logprobs``
    (the probe scorer's free answer_prob signal, no full pass needed); without it, nothing is added."""
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k")
    body = {**chat_body("logprobs?", data_url(png), stream=stream), "logprobs": True}
    r = client.chat.completions.create(**body)
    got = ([e.logprob for c in r for e in (c.choices[0].logprobs.content if c.choices[0].logprobs else [])]
           if stream else [e.logprob for e in r.choices[0].logprobs.content])
    assert got == ANSWER_LOGPROBS
    plain_r = client.chat.completions.create(**chat_body("plain?", data_url(png), stream=stream))
    if stream:  # a stream returns at its headers: read it to the end, as the first one was
        list(plain_r)
    with_lp, plain = proxy.samples()
    assert with_lp.meta["answer_logprobs"] == ANSWER_LOGPROBS and with_lp.answer == ANSWER
    assert "answer_logprobs" not in plain.meta


def test_openai_client_parsed_objects_match_direct(canned, make_proxy, png):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    body = chat_body("What is shown?", data_url(png))
    direct = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k").chat.completions.create(**body)
    proxied = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k").chat.completions.create(**body)
    assert proxied.model_dump() == direct.model_dump()
    stream = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k").chat.completions.create(**{**body, "stream": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER


def test_http_image_url_is_recorded_not_fetched(canned, make_proxy):
    srv, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    url = "http://198.51.100.7/images/cat.png"  # TEST-NET: a fetch would hang, so none may happen
    openai.OpenAI(base_url=proxy.url + "/v1", api_key="k").chat.completions.create(**chat_body("cat?", url))
    (s,) = proxy.samples()
    assert s.image is not None and s.image.url == url and s.image.data is None


def test_sampling_through_the_proxy_is_deterministic(canned, make_proxy):
    _, port = canned
    proxy = make_proxy(f"http://127.0.0.1:{port}", rate=0.3)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k")
    img = data_url(png_bytes(3, side=24))
    prompts = [f"question {i}?" for i in range(60)]
    for p in prompts * 2:  # a replay of the same traffic
        client.chat.completions.create(**chat_body(p, img))
    samples = proxy.samples()
    first, second = [s.prompt for s in samples[: len(samples) // 2]], [s.prompt for s in samples[len(samples) // 2:]]
    assert first == second  # the replay sampled exactly the same requests
    assert 5 <= len(first) <= 35  # ~30% of 60
    assert proxy.dropped("sampled_out") == 120 - len(samples)


@pytest.mark.slow
def test_fixture_server_as_upstream(make_proxy, tmp_path_factory):
    """The real fixture VLM server behind the proxy: same answers as a direct call, sample recorded."""
    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import built_fixtures
    from monitor.fixtures.server import serve_in_thread

    folder = built_fixtures().get("tiny-llava")
    if folder is None:
        from monitor.fixtures.build import build_untrained

        folder = build_untrained("llava", tmp_path_factory.mktemp("llava"), seed=0)
    adapter = load_vlm(folder, device="cpu")
    img = png_bytes(5, side=32)
    body = chat_body("Is there a red circle in the image?", data_url(img), model="tiny-llava")
    body["max_tokens"] = 4
    body["temperature"] = 0.0
    body["logprobs"] = True
    with serve_in_thread(adapter, model_name="tiny-llava") as handle:
        upstream = handle.base_url.rsplit("/v1", 1)[0]
        proxy = make_proxy(upstream)
        results = {}
        for name, base in (("direct", upstream), ("proxy", proxy.url)):
            for stream in (False, True):
                r = _raw(base, {**body, "stream": stream}, stream)
                results[name, stream] = r
        normalise = lambda b: re.sub(rb'"(id|created|system_fingerprint)":\s*("[^"]*"|\d+)', b"", b)  # noqa: E731
        for stream in (False, True):
            d, p = results["direct", stream], results["proxy", stream]
            assert p.status_code == d.status_code == 200
            skip = {"date", "content-length"}
            assert [h for h in p.headers.items() if h[0] not in skip] == [h for h in d.headers.items() if h[0] not in skip]
            assert normalise(p.content) == normalise(d.content)
        samples = proxy.samples()
    assert len(samples) == 2
    plain = json.loads(results["proxy", False].content)
    by_stream = {s.meta["stream"]: s for s in samples}
    assert by_stream[False].response_id == plain["id"]
    assert by_stream[False].answer == plain["choices"][0]["message"]["content"]
    assert by_stream[True].answer == plain["choices"][0]["message"]["content"]  # greedy: same answer
    assert by_stream[True].response_id.startswith("chatcmpl")
    assert all(s.image is not None and s.image.data == img for s in samples)

    # the served tokens' log-probabilities ride along in meta, streamed or not: exactly what the client got
    served = [e["logprob"] for e in plain["choices"][0]["logprobs"]["content"]]
    assert served and all(v <= 0 for v in served)
    assert by_stream[False].meta["answer_logprobs"] == served
    assert by_stream[True].meta["answer_logprobs"] == pytest.approx(served, abs=1e-6)
    # ... and they are the model's own: a full pass over the served answer gives the same values,
    # so the scorer's free answer_prob from captured logprobs equals the one a full pass would compute
    from io import BytesIO

    from PIL import Image

    from monitor.probe.scorer import captured_answer_prob

    enc = adapter.encode(Image.open(BytesIO(img)), body["messages"][0]["content"][0]["text"], plain["choices"][0]["message"]["content"])
    full = adapter.forward([enc], [adapter.num_layers], logits=True).answer_logprobs[0].tolist()
    assert full == pytest.approx(served, abs=1e-4)
    expected = float(np.exp(np.mean(full)))
    assert captured_answer_prob(by_stream[False].meta) == pytest.approx(expected, rel=1e-4)
