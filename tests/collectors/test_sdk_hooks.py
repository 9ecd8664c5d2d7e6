"""SDK hooks: return values, exceptions and timing of the wrapped call are unchanged."""

from __future__ import annotations

import asyncio
import statistics
import time

import openai
import pytest

from collectors.canned_upstream import ANSWER, ANSWER_LOGPROBS
from collectors.sample import CollectedSample
from collectors.sdk import SdkCollector, watch_openai, watch_vlm
from collectors.sampling import SamplingPolicy
from collectors.spool import SpoolReader
from tests.collectors.helpers import chat_body, data_url, png_bytes


def _samples(tmp_path, collector: SdkCollector) -> list[CollectedSample]:
    assert collector.flush(10)
    lane = collector.writer.dir.name
    r = SpoolReader(tmp_path, lane)
    payloads, _ = r.read(max_records=10_000)
    r.close()
    return [CollectedSample.from_bytes(p) for p in payloads]


@pytest.fixture
def collector(tmp_path):
    c = SdkCollector(tmp_path, lane="sdk-test", policy=SamplingPolicy(1.0))
    yield c
    c.close()


def test_openai_wrapper_returns_the_same_objects(canned, tmp_path, collector, png):
    _, port = canned
    base = f"http://127.0.0.1:{port}/v1"
    body = chat_body("wrapped?", data_url(png))
    plain = openai.OpenAI(base_url=base, api_key="k").chat.completions.create(**body)
    client = watch_openai(openai.OpenAI(base_url=base, api_key="k"), collector)
    wrapped = client.chat.completions.create(**body)
    assert type(wrapped) is type(plain) and wrapped.model_dump() == plain.model_dump()
    chunks = list(client.chat.completions.create(**{**body, "stream": True}))
    plain_chunks = list(openai.OpenAI(base_url=base, api_key="k").chat.completions.create(**{**body, "stream": True}))
    assert [c.model_dump() for c in chunks] == [c.model_dump() for c in plain_chunks]
    samples = _samples(tmp_path, collector)
    assert [(s.answer, s.response_id, s.meta["stream"]) for s in samples] == [
        (ANSWER, plain.id, False), (ANSWER, chunks[0].id, True)]
    assert all(s.image.data == png and s.source == "sdk" and s.prompt == "wrapped?" for s in samples)


def test_openai_wrapper_reraises_the_callers_exception_untouched(canned, tmp_path, collector):
    _, port = canned
    base = f"http://127.0.0.1:{port}/v1"
    body = chat_body("err?", "http://example.invalid/x.png")
    hdr = {"x-canned-status": "500"}
    with pytest.raises(openai.InternalServerError) as plain:
        openai.OpenAI(base_url=base, api_key="k", max_retries=0, default_headers=hdr).chat.completions.create(**body)
    client = watch_openai(openai.OpenAI(base_url=base, api_key="k", max_retries=0, default_headers=hdr), collector)
    with pytest.raises(openai.InternalServerError) as wrapped:
        client.chat.completions.create(**body)
    assert str(wrapped.value) == str(plain.value) and wrapped.value.status_code == 500
    assert wrapped.value.__cause__ is plain.value.__cause__ is None
    assert type(wrapped.value.__context__) is type(plain.value.__context__)  # the client's own chain, not ours
    assert len(wrapped.traceback) == len(plain.traceback) + 1  # only the wrapper's own frame is added
    with pytest.raises(TypeError):  # a caller's own mistake, raised by the client itself
        client.chat.completions.create(not_an_argument=1)
    assert _samples(tmp_path, collector) == []


def test_async_openai_wrapper(canned, tmp_path, collector, png):
    _, port = canned
    body = chat_body("async?", data_url(png))

    async def run():
        client = watch_openai(openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k"), collector)
        r = await client.chat.completions.create(**body)
        s = await client.chat.completions.create(**{**body, "stream": True})
        text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
        await client.close()
        return r, text

    r, text = asyncio.run(run())
    assert r.choices[0].message.content == text == ANSWER
    assert [s.answer for s in _samples(tmp_path, collector)] == [ANSWER, ANSWER]


def test_openai_wrapper_keeps_the_served_logprobs(canned, tmp_path, collector, png):
    """``logprobs=True`` calls bring the probe's free answer_prob signal along, sync, streamed and async."""
    _, port = canned
    base = f"http://127.0.0.1:{port}/v1"
    body = {**chat_body("logprobs?", data_url(png)), "logprobs": True}
    client = watch_openai(openai.OpenAI(base_url=base, api_key="k"), collector)
    r = client.chat.completions.create(**body)
    assert [e.logprob for e in r.choices[0].logprobs.content] == ANSWER_LOGPROBS  # the caller's view is intact
    list(client.chat.completions.create(**{**body, "stream": True}))

    async def run():
        aclient = watch_openai(openai.AsyncOpenAI(base_url=base, api_key="k"), collector)
        s = await aclient.chat.completions.create(**{**body, "stream": True})
        [c async for c in s]
        await aclient.close()

    asyncio.run(run())
    client.chat.completions.create(**chat_body("no logprobs asked", data_url(png)))
    samples = _samples(tmp_path, collector)
    assert [s.meta.get("answer_logprobs") for s in samples] == [ANSWER_LOGPROBS] * 3 + [None]


def test_vlm_wrapper_adds_microseconds_only(tmp_path, collector):
    img = png_bytes(13, side=16)

    def answer(image, prompt):
        return "yes"

    wrapped = watch_vlm(collector, model="m")(answer)
    for f in (answer, wrapped):  # warm up
        f(img, "q")

    def per_call(f) -> float:
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            f(img, "q")
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    collector.flush(10)
    added = per_call(wrapped) - per_call(answer)
    assert added < 50e-6, f"wrapper added {added * 1e6:.1f} us per call"


def test_vlm_wrapper_around_a_real_transformers_model(tmp_path, collector):
    from PIL import Image

    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import built_fixtures

    folder = built_fixtures().get("tiny-llava")
    if folder is None:
        from monitor.fixtures.build import build_untrained

        folder = build_untrained("llava", tmp_path / "llava", seed=0)
    ad = load_vlm(folder, device="cpu")
    image = Image.new("RGB", (32, 32), "red")
    plain = ad.generate(image, "Is there a red square?", max_new_tokens=4)
    generate = watch_vlm(collector, model="tiny-llava")(ad.generate)
    assert generate(image, "Is there a red square?", max_new_tokens=4) == plain
    with pytest.raises(Exception) as e_plain:
        ad.generate(image, None)  # type: ignore[arg-type]
    with pytest.raises(type(e_plain.value)) as e_wrapped:
        generate(image, None)
    assert str(e_wrapped.value) == str(e_plain.value)
    (s,) = _samples(tmp_path, collector)
    assert (s.model, s.prompt, s.answer, s.source) == ("tiny-llava", "Is there a red square?", plain, "sdk")
    assert s.image.format == "PNG" and (s.image.width, s.image.height) == (32, 32)


def test_collector_bug_is_swallowed_and_reported(tmp_path, collector, internal_errors):
    def answer(image, prompt):
        return "yes"

    wrapped = watch_vlm(collector, model="m")(answer)
    collector.pipeline.offer = None  # break the collector
    assert wrapped(b"img", "q") == "yes"
    assert len(internal_errors) == 1
    internal_errors.clear()  # expected here: do not fail the test at teardown


def test_a_forked_child_restarts_the_worker_and_spools_its_samples(tmp_path):
    """gunicorn --preload: the collector is made before the fork; the child's samples must reach the spool."""
    import os

    from collectors.spool import lanes

    c = SdkCollector(tmp_path, lane="app", policy=SamplingPolicy(1.0))

    @watch_vlm(c, model="m")
    def answer(image: bytes, prompt: str) -> str:
        return "yes"

    img = png_bytes(5, side=16)
    answer(img, "before the fork")
    assert c.flush(10)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 3
        try:
            answer(img, "in the child")
            code = 0 if c.flush(10) and c.metrics.dropped_count("queue_full") == 0 else 1
            c.close()
        finally:
            os._exit(code)
    answer(img, "in the parent after the fork")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's sample was not spooled"
    assert c.flush(10)
    c.close()
    prompts: dict[str, list[str]] = {}
    for lane in lanes(tmp_path):
        r = SpoolReader(tmp_path, lane)
        prompts[lane] = [CollectedSample.from_bytes(p).prompt for p in r.read(max_records=100)[0]]
        r.close()
    assert prompts == {"app": ["before the fork", "in the parent after the fork"],
                       f"app-{pid}": ["in the child"]}  # a lane of its own: one writer per lane
