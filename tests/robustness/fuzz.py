"""Property-based fuzzing of every parser that reads outside input (shared by the tests and
``bench/robustness.py``; imported as ``tests.robustness.fuzz``).

Each parser gets hypothesis-generated input: arbitrary JSON, arbitrary text, and valid input with
one field at a time replaced by arbitrary JSON. Every case must end as a record (``kept``) or as
the parser's own named rejection (``LineError``, ``ImageError``, ``DropSample``, or the documented
``None`` of ``token_logprobs``); any other exception fails the run. :func:`run` returns the counts.

The records that the samples-file, labels-file and chat parsers produce are kept so a test can
store them and check that each ends as a stored row or a counted :class:`~storage.records.Rejected`.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.exchange import RawExchange, answer_from_sse, build_sample, load_image_ref, token_logprobs
from collectors.sample import CollectedSample, DropSample
from collectors.sampling import SamplingPolicy
from collectors.shipper import to_record
from storage.images import ImageError, decode_image_ref, inspect_image
from storage.jsonl import LineError, parse_label_line, parse_sample_line

__all__ = ["PARSERS", "FuzzResult", "run", "png"]

MAX_IMAGE_BYTES = 200_000


def png(side: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 10, 200)).save(buf, "PNG")
    return buf.getvalue()


_PNG = png()
_PNG_B64 = base64.b64encode(_PNG).decode()
_PNG_URL = "data:image/png;base64," + _PNG_B64

# --- strategies ----------------------------------------------------------------------------------

_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # NUL and lone surrogates included
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | _text
json_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
                           max_leaves=12)


def _dumps(obj: Any) -> str:
    """JSON text of ``obj`` as a hostile client would send it (NaN, lone surrogates and all)."""
    return json.dumps(obj, ensure_ascii=False)


def _mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some keys replaced by arbitrary JSON, removed, or added."""
    keys = sorted(base)
    return st.tuples(
        st.dictionaries(st.sampled_from(keys), json_values, max_size=3),
        st.sets(st.sampled_from(keys), max_size=2),
        st.dictionaries(_text, json_values, max_size=2),
    ).map(lambda t: {**{k: v for k, v in base.items() if k not in t[1]}, **t[2], **t[0]})


def _lines(base: dict[str, Any]) -> st.SearchStrategy[str]:
    raw = st.text(max_size=200) | json_values.map(_dumps)
    return st.one_of(_mutated(base).map(_dumps), raw, _mutated(base).map(_dumps).map(lambda s: s[: len(s) // 2]))


_SAMPLE = {"id": "s1", "ts": "2026-11-25T10:00:00+02:00", "model": "m", "image": _PNG_URL, "prompt": "p",
           "answer": "a", "label": True, "response_id": "chatcmpl-1", "route": "/v1/chat/completions",
           "meta": {"k": 1}}
_LABEL = {"sample_id": "s1", "response_id": "chatcmpl-1", "correct": True, "source": "human", "value": 0.5}
_timestamps = st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat())
_sample_lines = _lines(_SAMPLE) | st.builds(
    lambda ts, prompt, meta: _dumps({**_SAMPLE, "ts": ts, "prompt": prompt, "meta": meta}), _timestamps, _text,
    json_values)


def _chat_body() -> st.SearchStrategy[bytes]:
    part_text = st.fixed_dictionaries({"type": st.just("text"), "text": _text | json_values})
    part_image = st.fixed_dictionaries({"type": st.just("image_url"),
                                        "image_url": st.fixed_dictionaries({"url": st.just(_PNG_URL) | _image_refs})})
    parts = st.lists(part_text | part_image | json_values, max_size=3)
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]) | json_values,
                                     "content": parts | _text | json_values})
    good = {"model": "llava", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": _PNG_URL}}]}]}
    plausible = st.builds(  # a good request whose texts and sampling parameters are arbitrary
        lambda model, prompt, system, temperature, seed: {
            "model": model, "temperature": temperature, "seed": seed,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": [
                {"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": _PNG_URL}}]}]},
        _text.filter(bool), _text, _text, json_values, json_values)
    body = st.one_of(plausible, _mutated(good), st.fixed_dictionaries({"model": _text | st.just("llava"),
                                                                      "messages": st.lists(message, max_size=3)}),
                     json_values)
    return st.one_of(body.map(_dumps).map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=80))


_choice = st.fixed_dictionaries({"index": st.just(0) | json_values, "delta": json_values
                                 | st.fixed_dictionaries({"content": _text | json_values})})
_chunk = st.fixed_dictionaries({"id": _text | json_values, "choices": st.lists(_choice | json_values, max_size=2)})


def _sse_bodies() -> st.SearchStrategy[bytes]:
    event = (_chunk | json_values).map(lambda c: b"data: " + _dumps(c).encode("utf-8", "surrogatepass"))
    noise = st.binary(max_size=40) | st.sampled_from([b"data: [DONE]", b"data:", b": keep-alive", b"event: x"])
    return st.lists(event | noise, max_size=5).map(lambda evs: b"\n\n".join(evs))


_logprob_entry = st.fixed_dictionaries({"token": _text, "logprob": st.floats() | json_values})
_logprobs = st.one_of(json_values, st.fixed_dictionaries({"content": st.lists(_logprob_entry | json_values,
                                                                            max_size=4) | json_values}))


def _answer_json() -> st.SearchStrategy[bytes]:
    good = {"id": "chatcmpl-1", "choices": [{"message": {"content": "a cat"}, "logprobs": None}]}
    return st.one_of(_mutated(good).map(_dumps),
                     st.builds(lambda c, lp: _dumps({"id": "x", "choices": [{"message": {"content": c},
                                                                             "logprobs": lp}]}),
                               _text | json_values, _logprobs),
                     json_values.map(_dumps)).map(lambda s: s.encode("utf-8", "surrogatepass"))


_b64_noise = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n", max_size=120)
_image_refs = st.one_of(
    _text,
    st.builds(lambda cut: "data:image/png;base64," + _PNG_B64[:cut], st.integers(0, len(_PNG_B64))),
    st.builds(lambda mime, params, b64: f"data:{mime}{params};base64,{b64}",
              st.sampled_from(["image/png", "image/jpeg", "text/plain", "", "image/"]),
              st.sampled_from(["", ";charset=utf-8", ";x=y;z"]), _b64_noise),
    st.builds(lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
              st.binary(max_size=64) | st.builds(lambda n, x: _PNG[:n] + x, st.integers(0, len(_PNG)),
                                                 st.binary(max_size=8))),
    _b64_noise,
    st.sampled_from(["http://x/a.png", "https://[::1]/a", "HTTPS://example.org", "img.png", "../../etc/passwd",
                     "/dev/zero", "~/nope.png", "data:", "data:,", "a" * 5000]),
)

# --- parsers -------------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    """What :func:`run` saw: cases, outcome per named rejection, and the records produced."""

    parser: str
    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    records: list[Any] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"cases": self.cases, "kept": self.outcomes["kept"],
                "rejected": {k: v for k, v in sorted(self.outcomes.items()) if k != "kept"}}


def _sample_line(text: str, base_dir: Path) -> Any:
    try:
        return parse_sample_line(text, base_dir, MAX_IMAGE_BYTES)
    except LineError as e:
        return _rejected("LineError", e)


def _label_line(text: str, _base: Path) -> Any:
    try:
        return parse_label_line(text)
    except LineError as e:
        return _rejected("LineError", e)


def _chat_exchange(body: bytes, _base: Path, answer: bytes = b'{"id": "r", "choices": [{"message": {"content": "a"}}]}',
                   content_type: str = "application/json") -> Any:
    raw = RawExchange(ts=datetime.now(timezone.utc), route="/v1/chat/completions", fraction=0.0, request_body=body,
                      status=200, response_body=answer, content_type=content_type)
    try:
        sample = build_sample(raw, SamplingPolicy(1.0, {}), max_image_bytes=MAX_IMAGE_BYTES)
    except DropSample as e:
        return _rejected(e.reason, e)
    # what the proxy spools is what the shipper reads back and turns into a storage record
    return to_record(CollectedSample.from_bytes(sample.to_bytes()))


def _chat_answer(answer: bytes, base: Path) -> Any:
    good = _dumps({"model": "llava", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _PNG_URL}}, {"type": "text", "text": "q"}]}]}).encode()
    return _chat_exchange(good, base, answer)


def _sse(body: bytes, _base: Path) -> Any:
    try:
        return answer_from_sse(body)
    except DropSample as e:
        return _rejected(e.reason, e)


def _logprobs_obj(obj: Any, _base: Path) -> Any:
    lps = token_logprobs(obj)
    if lps is None:
        return _rejected("no_logprobs", None)
    assert all(isinstance(x, float) and x <= 1e-6 for x in lps), lps
    return lps


def _image_ref(ref: str, base: Path) -> Any:
    try:
        decoded = decode_image_ref(ref, base, MAX_IMAGE_BYTES)
        if decoded.data is not None:
            inspect_image(decoded.data, MAX_IMAGE_BYTES)
    except ImageError as e:
        return _rejected("ImageError", e)
    try:  # the collectors' own reading of the same reference (request bodies)
        load_image_ref(ref, MAX_IMAGE_BYTES)
    except DropSample as e:
        return _rejected(f"collector:{e.reason}", e)
    return decoded


class _Rejection:
    def __init__(self, name: str, err: BaseException | None) -> None:
        msg = str(err) if err is not None else name
        assert msg.strip(), f"{name} without a message"  # a rejection names what was wrong
        self.name = name


def _rejected(name: str, err: BaseException | None) -> _Rejection:
    return _Rejection(name, err)


# name -> (strategy, parser(value, base_dir)); the parser returns a record or a _Rejection
PARSERS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any, Path], Any]]] = {
    "samples_file_line": (_sample_lines, _sample_line),
    "labels_file_line": (_lines(_LABEL), _label_line),
    "chat_request_body": (_chat_body(), _chat_exchange),
    "chat_answer_body": (_answer_json() | _sse_bodies(), _chat_answer),
    "sse_reassembly": (_sse_bodies(), _sse),
    "openai_logprobs": (_logprobs, _logprobs_obj),
    "image_reference": (_image_refs, _image_ref),
}


def run(name: str, max_examples: int, base_dir: Path) -> FuzzResult:
    """Fuzz one parser with ``max_examples`` cases; raises on the first unhandled exception."""
    strategy, parse = PARSERS[name]
    result = FuzzResult(name)

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(value: Any) -> None:
        out = parse(value, base_dir)
        result.cases += 1
        if isinstance(out, _Rejection):
            result.outcomes[out.name] += 1
        else:
            result.outcomes["kept"] += 1
            result.records.append(out)

    case()
    return result
