"""Replay SynPOPE traffic through the proxy with the official ``openai`` client; send labels late.

The traffic mixes tasks (``plan.tasks``); each answer is labelled by its task's judge
(:func:`monitor.synpope.judge`: a caption is correct iff it names exactly the present objects).

Requests leave at a steady rate (scheduled times, a few client threads); a deterministic
``label_share`` of the responses get a ground-truth label (the judge's verdict) posted to the API's
``POST /v1/labels`` by response id, ``label_delay_seconds`` after the response.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from monitor.demo.tasks import max_tokens_for
from monitor.synpope.judges import judge

__all__ = ["Request", "Outcome", "TrafficStats", "requests_for", "task_order", "mixed_examples", "demo_shift", "Replayer", "LabelSender"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    index: int
    prompt: str
    image_url: str
    truth: str
    shifted: bool
    task: str = "yesno"  # the SynPOPE task whose judge labels the answer


@dataclass
class Outcome:
    index: int
    response_id: str | None
    answer: str | None
    correct: bool | None
    sent_at: float
    error: str | None = None


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    correct: int = 0
    labels_sent: int = 0
    label_errors: int = 0
    sent_times: list[float] = field(default_factory=list)  # wall time (epoch) of each request index
    correct_before: list[int] = field(default_factory=lambda: [0, 0])  # [correct, answered] before the shift
    correct_after: list[int] = field(default_factory=lambda: [0, 0])
    # per task and period ("before"/"after" the shift): answered, correct, and for captions the
    # answers naming an absent object (CHAIR_s) and the objects named / hallucinated (CHAIR_i)
    by_task: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def record(self, task: str, shifted: bool, verdict: Any) -> None:
        row = self.by_task.setdefault(task, {}).setdefault("after" if shifted else "before", {
            "answered": 0, "correct": 0, "hallucinating": 0, "named": 0, "hallucinated": 0})
        row["answered"] += 1
        row["correct"] += int(verdict.correct)
        if task == "describe":
            row["hallucinating"] += int(bool(verdict.hallucinated))
            row["named"] += len(verdict.parsed.split(" and ")) if verdict.parsed else 0
            row["hallucinated"] += len(verdict.hallucinated)


def _data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def task_order(mix: Any, n: int, seed: str) -> list[str]:
    """The task of each of ``n`` examples, drawn with the ``mix`` shares from one seeded stream."""
    import random

    names = [t for t, _ in mix]
    weights = [w for _, w in mix]
    picks = random.Random(f"demo-tasks:{seed}")
    return [picks.choices(names, weights)[0] for _ in range(n)]


def mixed_examples(mix: Any, n: int, split: str, seed: int, shift: Any = None) -> Iterator[Any]:
    """``n`` SynPOPE examples with tasks drawn from ``mix``: one stream per task (``split`` picks the
    yes/no negatives; yes/no keeps the seed it had before the demo mixed tasks)."""
    from monitor.synpope import iter_examples

    order = task_order(mix, n, f"{split}:{seed}")
    streams = {t: iter_examples(split, order.count(t), seed=seed, shift=shift, task=t) for t in dict.fromkeys(order)}
    for task in order:
        yield next(streams[task])


def demo_shift(plan: Any) -> Any:
    from monitor.synpope import Shift

    return Shift(noise=plan.shift_noise, cooc_seed=plan.shift_cooc_seed)


def requests_for(plan: Any) -> Iterator[Request]:
    """The demo's traffic, lazily: the task mix on the stable split, then on the shifted one
    (yes/no questions from ``shift_split``, every task with pixel noise and the new co-occurrence)."""
    stable = mixed_examples(plan.tasks, plan.shift_at, plan.base_split, plan.seed + 101)
    shifted = mixed_examples(plan.tasks, plan.total - plan.shift_at, plan.shift_split, plan.seed + 202, demo_shift(plan))
    for i, ex in enumerate(stable):
        yield Request(i, ex.prompt, _data_url(ex.image), ex.truth, False, ex.meta["task"])
    for j, ex in enumerate(shifted):
        yield Request(plan.shift_at + j, ex.prompt, _data_url(ex.image), ex.truth, True, ex.meta["task"])


def labelled(index: int, share: float, seed: int) -> bool:
    h = int(hashlib.sha256(f"demo-label:{seed}:{index}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < share


class LabelSender(threading.Thread):
    """Posts each scheduled label at its due time (a min-heap), in its own thread."""

    def __init__(self, api_url: str, stats: TrafficStats, stop: threading.Event, token: str | None = None) -> None:
        super().__init__(name="demo-labels", daemon=True)
        self.api_url = api_url
        self.stats = stats
        self.stop_event = stop
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._heap: list[tuple[float, int, str, bool, int]] = []
        self.max_tries = 6
        self._cv = threading.Condition()
        self.closed = False

    def schedule(self, due: float, index: int, response_id: str, correct: bool) -> None:
        self._push(due, index, response_id, correct, 0)

    def _push(self, due: float, index: int, response_id: str, correct: bool, tries: int) -> None:
        with self._cv:
            heapq.heappush(self._heap, (due, index, response_id, correct, tries))
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=20.0, headers=self.headers) as client:
            while not self.stop_event.is_set():
                with self._cv:
                    if not self._heap:
                        if self.closed:
                            return
                        self._cv.wait(0.5)
                        continue
                    due = self._heap[0][0]
                    wait = due - time.time()
                    if wait > 0:
                        self._cv.wait(min(wait, 0.5))
                        continue
                    _, index, rid, correct, tries = heapq.heappop(self._heap)
                try:
                    r = client.post("/v1/labels", json={"response_id": rid, "correct": correct, "source": "ground_truth"})
                    r.raise_for_status()
                    self.stats.labels_sent += 1
                except httpx.HTTPError as e:
                    if tries < self.max_tries and not isinstance(e, httpx.HTTPStatusError):
                        # a busy API: the label is sent again (it is idempotent), not lost
                        self._push(time.time() + 2.0 * (tries + 1), index, rid, correct, tries + 1)
                        continue
                    self.stats.label_errors += 1
                    logger.warning("label for sample %d not accepted after %d tries: %s", index, tries + 1, e)


class Replayer:
    """Sends ``requests`` through ``base_url`` (the proxy) at ``rate`` per second."""

    def __init__(self, plan: Any, base_url: str, labels: LabelSender, stats: TrafficStats, stop: threading.Event) -> None:
        self.plan = plan
        self.base_url = base_url
        self.labels = labels
        self.stats = stats
        self.stop = stop
        self._lock = threading.Lock()
        self.stats.sent_times = [0.0] * plan.total

    def _one(self, client: Any, req: Request) -> None:
        sent = time.time()
        self.stats.sent_times[req.index] = sent
        try:
            resp = client.chat.completions.create(
                model=self.plan.model,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": req.prompt},
                    {"type": "image_url", "image_url": {"url": req.image_url}},
                ]}],
                temperature=0,
                max_tokens=max_tokens_for(req.task),
                logprobs=True,  # the proxy keeps them: the scorer's answer_prob without a full pass
            )
            answer = resp.choices[0].message.content or ""
            verdict = judge(req.task, answer, req.truth)
            ok = verdict.correct
        except Exception as e:  # the demo goes on; failures are counted and shown
            with self._lock:
                self.stats.sent += 1
                self.stats.errors += 1
                n = self.stats.errors
            if n <= 5 or n % 100 == 0:
                logger.warning("request %d failed (%d failures so far): %s", req.index, n, e)
            return
        with self._lock:
            self.stats.sent += 1
            self.stats.ok += 1
            self.stats.correct += int(ok)
            bucket = self.stats.correct_after if req.shifted else self.stats.correct_before
            bucket[0] += int(ok)
            bucket[1] += 1
            self.stats.record(req.task, req.shifted, verdict)
        if labelled(req.index, self.plan.label_share, self.plan.seed) and resp.id:
            self.labels.schedule(time.time() + self.plan.label_delay_seconds, req.index, resp.id, ok)

    def _put(self, work: queue.Queue[Request | None], item: Request | None) -> None:
        """Queue ``item``, waiting while the queue is full (the server fell behind), until stopped."""
        while not self.stop.is_set():
            try:
                work.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        from openai import OpenAI

        client = OpenAI(base_url=self.base_url, api_key="demo", max_retries=2, timeout=30.0)
        # daemon threads, not an executor: Ctrl-C must not wait for requests in flight at exit
        work: queue.Queue[Request | None] = queue.Queue(maxsize=self.plan.concurrency * 4)

        def worker() -> None:
            while True:
                req = work.get()
                if req is None or self.stop.is_set():
                    return
                self._one(client, req)

        threads = [threading.Thread(target=worker, name=f"demo-client-{i}", daemon=True)
                   for i in range(self.plan.concurrency)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        for req in requests_for(self.plan):
            if self.stop.is_set():
                break
            delay = t0 + req.index / self.plan.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                break
            self._put(work, req)
        for _ in threads:
            self._put(work, None)
        for t in threads:
            while t.is_alive() and not self.stop.is_set():
                t.join(0.5)
