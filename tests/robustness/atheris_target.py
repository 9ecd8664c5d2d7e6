"""Coverage-guided fuzzing with atheris (libFuzzer) of the parsers of outside input, in a process of
its own: ``python -m tests.robustness.atheris_target CORPUS_DIR -runs=N``. The first byte of each
input picks the parser of :data:`tests.robustness.fuzz.PARSERS` (the hypothesis suite's), the rest
is its input; the corpus starts from one good input per parser. Any exception other than the
parser's named rejection ends the process with libFuzzer's crash report (exit code not 0)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import collectors.exchange  # noqa: F401
    import storage.images  # noqa: F401
    import storage.jsonl  # noqa: F401

from tests.robustness import fuzz  # noqa: E402

NAMES = sorted(fuzz.PARSERS)
_BYTES_INPUT = {"chat_request_body", "chat_answer_body", "sse_reassembly"}
_CHAT = {"model": "llava", "messages": [{"role": "user", "content": [
    {"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": fuzz._PNG_URL}}]}]}
SEEDS = {
    "samples_file_line": json.dumps(fuzz._SAMPLE).encode(),
    "labels_file_line": json.dumps(fuzz._LABEL).encode(),
    "chat_request_body": json.dumps(_CHAT).encode(),
    "chat_answer_body": b'{"id": "r", "choices": [{"message": {"content": "a"}, "logprobs": '
                        b'{"content": [{"token": "a", "logprob": -0.1}]}}]}',
    "sse_reassembly": b'data: {"id": "r", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\ndata: [DONE]\n\n',
    "openai_logprobs": b'{"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2}]}',
    "image_reference": fuzz._PNG_URL.encode(),
}


def one(data: bytes, base: Path) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    raw = data[1:]
    parse = fuzz.PARSERS[name][1]
    if name in _BYTES_INPUT:
        parse(raw, base)
    elif name == "openai_logprobs":
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return
        parse(obj, base)
    else:
        parse(raw.decode("utf-8", "replace"), base)


def main() -> None:
    corpus = Path(sys.argv[1])
    corpus.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        (corpus / f"seed-{name}").write_bytes(bytes([i]) + SEEDS[name])
    base = Path(tempfile.mkdtemp(prefix="atheris-"))
    atheris.Setup(sys.argv, lambda data: one(data, base))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
