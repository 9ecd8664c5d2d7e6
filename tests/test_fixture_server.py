"""The fixture server against the official ``openai`` client, over a real uvicorn on loopback."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image, ImageDraw

from monitor.adapter import load_vlm
from monitor.fixtures.server import serve_in_thread
from tests.fixture_models import FAMILY_FIXTURE, PROMPT, fixture_dir


def _image(colour: str = "red") -> Image.Image:
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((16, 16, 48, 48), fill=colour)
    return img


def _data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _messages(url: str, prompt: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="module", params=["llava", "paligemma"])
def served(request, tmp_path_factory):
    adapter = load_vlm(fixture_dir(request.param, tmp_path_factory), device="cpu")
    name = FAMILY_FIXTURE[request.param]
    with serve_in_thread(adapter, model_name=name) as handle:
        client = openai.OpenAI(base_url=handle.base_url, api_key="unused", max_retries=0, timeout=120)
        yield adapter, name, handle, client


def test_models_lists_the_served_model(served):
    _, name, _, client = served
    assert [m.id for m in client.models.list()] == [name]


def test_openai_client_gets_greedy_answers_with_image_and_logprobs(served):
    adapter, name, _, client = served
    img = _image()
    resp = client.chat.completions.create(
        model=name, messages=_messages(_data_url(img)), max_tokens=4, temperature=0, n=2, logprobs=True, top_logprobs=3
    )
    assert resp.id.startswith("chatcmpl-") and resp.object == "chat.completion" and resp.model == name
    expected = adapter.generate(img, PROMPT, max_new_tokens=4, temperature=0.0)
    assert [c.message.content for c in resp.choices] == [expected, expected]
    assert [c.index for c in resp.choices] == [0, 1]
    for choice in resp.choices:
        assert choice.finish_reason in ("stop", "length")
        entries = choice.logprobs.content
        for e in entries:
            assert len(e.top_logprobs) == 3
            tops = [t.logprob for t in e.top_logprobs]
            assert tops == sorted(tops, reverse=True)
            assert e.logprob == pytest.approx(tops[0], abs=1e-6)  # greedy picks the most likely token
            assert e.logprob <= 0.0
    assert resp.usage.prompt_tokens == adapter.encode(img, PROMPT).length
    assert resp.usage.completion_tokens == sum(len(c.logprobs.content) for c in resp.choices)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_matches_the_plain_answer(served):
    _, name, _, client = served
    url = _data_url(_image("blue"))
    plain = client.chat.completions.create(model=name, messages=_messages(url), max_tokens=5, temperature=0)
    stream = client.chat.completions.create(
        model=name, messages=_messages(url), max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True}, logprobs=True,
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    token_chunks = [c for c in chunks if c.choices and c.choices[0].logprobs]
    assert len(token_chunks) == plain.usage.completion_tokens
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_seeded_sampling_is_reproducible_and_n_choices(served):
    _, name, _, client = served
    url = _data_url(_image("green"))
    kw = dict(model=name, messages=_messages(url), max_tokens=6, temperature=1.0, n=3, seed=11)
    a = [c.message.content for c in client.chat.completions.create(**kw).choices]
    b = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert len(a) == 3 and a == b


BAD_REQUESTS = [
    ("invalid_json", b"{not json", 400, None),
    ("missing_messages", {"model": "@"}, 400, "messages"),
    ("empty_messages", {"model": "@", "messages": []}, 400, "messages"),
    ("temperature", {"model": "@", "messages": "@msgs", "temperature": 5}, 400, "temperature"),
    ("n_zero", {"model": "@", "messages": "@msgs", "n": 0}, 400, "n"),
    ("max_tokens", {"model": "@", "messages": "@msgs", "max_tokens": 0}, 400, "max_tokens"),
    ("top_logprobs_alone", {"model": "@", "messages": "@msgs", "top_logprobs": 2}, 400, "top_logprobs"),
    ("bad_role", {"model": "@", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ("http_image", {"model": "@", "messages": _messages("http://example.com/a.png")}, 400,
     "messages.[0].content.[1].image_url.url"),
    ("bad_base64", {"model": "@", "messages": _messages("data:image/png;base64,@@@")}, 400,
     "messages.[0].content.[1].image_url.url"),
    ("not_an_image", {"model": "@", "messages": _messages("data:image/png;base64," + base64.b64encode(b"hello").decode())},
     400, "messages.[0].content.[1].image_url.url"),
    ("two_images", {"model": "@", "messages": "@two"}, 400, "messages"),
    ("no_user", {"model": "@", "messages": [{"role": "system", "content": "be brief"}]}, 400, "messages"),
    ("unknown_model", {"model": "no-such-model", "messages": "@msgs"}, 404, "model"),
]


@pytest.mark.parametrize("case,body,status,param", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_malformed_requests_get_openai_error_bodies(served, case, body, status, param):
    _, name, handle, _ = served
    url = _data_url(_image())
    if isinstance(body, dict):
        body = dict(body)
        if body.get("model") == "@":
            body["model"] = name
        if body.get("messages") == "@msgs":
            body["messages"] = _messages(url)
        if body.get("messages") == "@two":
            two = _messages(url)
            two[0]["content"].append({"type": "image_url", "image_url": {"url": url}})
            body["messages"] = two
        r = httpx.post(handle.base_url + "/chat/completions", json=body, timeout=30)
    else:
        r = httpx.post(handle.base_url + "/chat/completions", content=body,
                       headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_client_raises_typed_errors_and_unknown_routes_are_openai_shaped(served):
    _, name, handle, client = served
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=name, messages=_messages(_data_url(_image())), temperature=3)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=_messages(_data_url(_image())))
    r = httpx.get(handle.base_url + "/nothing-here", timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_paligemma_refuses_a_request_without_image(served):
    adapter, name, _, client = served
    if adapter.family != "paligemma":
        # LLaVA answers text-only prompts: no image tokens, no pixel values
        resp = client.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPT}],
                                              max_tokens=3, temperature=0)
        assert resp.choices[0].message.content == adapter.generate(None, PROMPT, max_new_tokens=3)
        return
    with pytest.raises(openai.BadRequestError, match="needs an image"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPT}], max_tokens=3)


def test_serve_runs_the_folder_in_its_own_process(tmp_path_factory):
    """``serve`` (what ``vlmwatch fixture serve`` calls) answers on its port, named after the folder."""
    import socket
    import subprocess
    import sys
    import time

    folder = fixture_dir("paligemma", tmp_path_factory)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"from monitor.fixtures.server import serve; serve({str(folder)!r}, '127.0.0.1', {port})"
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with log_path.open("wb") as log_file:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # a cold torch + transformers import on a loaded 2-core box
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    raise AssertionError(f"serve did not come up: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        assert r.json()["data"][0]["id"] == folder.name
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        resp = client.chat.completions.create(model=folder.name, messages=_messages(_data_url(_image())),
                                              max_tokens=2, temperature=0)
        assert isinstance(resp.choices[0].message.content, str)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
