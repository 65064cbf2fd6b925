"""ONI's asynchronous annotator: labels messages (or message pairs) while the learner keeps training.

The learner only ever calls `submit` and `poll`, which never block. The annotator runs in a thread
of the learner's process or in its own process (`mode`), keeps its backlog itself and always takes
the newest jobs first, `batch_size` at a time, with the LLM requests of a batch in flight together.

A failed request never becomes a label. If the server cannot be reached at all, the batch goes back
on top of the backlog and the annotator waits and tries again, for as long as it takes; the learner
carries on with the labels it has. A request the server took but did not answer usably (timeouts or
errors after the client's retries) is asked again after the newer work, up to `max_attempts` times
in all, and then given up: its result is None. A reply without a readable verdict is an answer:
"not helpful" for a message, a tie for a pair, as in the ONI reference.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .annotators import compare, judge_message, judge_pair
from .labels import Label
from .llm_client import ChatClient, LLMError, LLMSettings, LLMUnreachableError

ANNOTATORS = ("llm", "score_gain")
MODES = ("thread", "process")

# A job: (key, payload). Message job payload: (text, score_gain). Pair job payload:
# ((text_1, gain_1), (text_2, gain_2)). Result: (key, value) with value 0/1 (message: helpful?),
# a Label value (pair), or None when its requests kept failing and it was given up.
Job = tuple[int, Any]
Result = tuple[int, int | None]


@dataclass(frozen=True)
class AnnotatorSpec:
    task: str                         # "message" (retrieval / classification) or "pair" (ranking)
    annotator: str = "llm"
    goal: str = "score"
    batch_size: int = 100             # ONI labels the newest ~100 messages at a time
    llm: dict | None = None           # LLMSettings fields, for annotator="llm"
    retry_wait_s: float = 5.0         # pause after the server could not be reached
    max_attempts: int = 3             # asks of a job whose requests fail (not unreachable) before giving up


def _label_one(spec: AnnotatorSpec, client: ChatClient | None, payload: Any) -> int:
    if spec.task == "message":
        text, gain = payload
        if client is None:
            return int(gain > 0)
        return judge_message(client, text, spec.goal)
    (text_1, gain_1), (text_2, gain_2) = payload
    if text_1 == text_2:
        return int(Label.TIE)
    if client is None:
        return int(compare(gain_1, gain_2))
    label, _ = judge_pair(client, text_1, text_2, spec.goal, retry=False)
    return int(Label.TIE if label is Label.UNKNOWN else label)


def serve(inbox: Any, outbox: Any, stop: Any, spec: AnnotatorSpec) -> None:
    """The annotator loop (thread or process body)."""
    client = ChatClient(LLMSettings(**spec.llm)) if spec.annotator == "llm" else None
    width = client.settings.max_concurrency if client else 1
    backlog: deque[Job] = deque()   # newest on the right
    failures: dict[int, int] = {}   # key → failed asks so far
    with cf.ThreadPoolExecutor(width, thread_name_prefix="oni-llm") as pool:
        while not stop.is_set():
            try:
                # Wait for work only when there is none queued.
                backlog.extend(inbox.get(timeout=0.05) if not backlog else inbox.get_nowait())
                while True:
                    backlog.extend(inbox.get_nowait())
            except queue.Empty:
                pass
            if not backlog:
                continue
            jobs = [backlog.pop() for _ in range(min(spec.batch_size, len(backlog)))]  # newest first
            futures = [pool.submit(_label_one, spec, client, payload) for _, payload in jobs]
            results: list[Result] = []
            unreachable: list[Job] = []
            later: list[Job] = []
            errors: list[str] = []
            for future, (key, payload) in zip(futures, jobs):
                try:
                    results.append((key, future.result()))
                    failures.pop(key, None)
                except LLMUnreachableError as exc:
                    unreachable.append((key, payload))
                    errors.append(str(exc))
                except LLMError as exc:
                    errors.append(str(exc))
                    failures[key] = failures.get(key, 0) + 1
                    if failures[key] >= spec.max_attempts:
                        results.append((key, None))
                        del failures[key]
                    else:
                        later.append((key, payload))
            backlog.extend(reversed(unreachable))  # back on top: still the newest
            backlog.extendleft(later)              # after everything newer
            outbox.put(("results", results, errors[-1] if errors else None))
            if unreachable:
                stop.wait(spec.retry_wait_s)


class OnlineAnnotator:
    """Handle the learner holds; counts what it sent and what came back."""

    def __init__(self, spec: AnnotatorSpec, mode: str = "thread") -> None:
        if mode not in MODES:
            raise ValueError(f"bonus.annotator_mode={mode!r}; allowed: {', '.join(MODES)}")
        if spec.annotator not in ANNOTATORS:
            raise ValueError(f"bonus.annotator={spec.annotator!r}; allowed: {', '.join(ANNOTATORS)}")
        if spec.annotator == "llm":
            if not spec.llm:
                raise ValueError("bonus.llm (base_url, model, ...) is required with bonus.annotator=llm")
            LLMSettings.from_config(spec.llm, "bonus.llm")
        self.spec = spec
        self.mode = mode
        if mode == "process":
            ctx = mp.get_context("spawn")  # no fork of a process that holds torch threads
            self._inbox, self._outbox, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
            self._worker: Any = ctx.Process(target=serve, args=(self._inbox, self._outbox, self._stop, spec),
                                            name="oni-annotator", daemon=True)
        else:
            self._inbox, self._outbox, self._stop = queue.Queue(), queue.Queue(), threading.Event()
            self._worker = threading.Thread(target=serve, args=(self._inbox, self._outbox, self._stop, spec),
                                            name="oni-annotator", daemon=True)
        self._worker.start()
        self.submitted = 0
        self.completed = 0
        self.failed = 0          # jobs given up after max_attempts failed asks
        self.label_rounds = 0    # annotation rounds that returned at least one label
        self.last_error: str | None = None
        self._rate_time = time.monotonic()
        self._rate_count = 0

    def submit(self, jobs: list[Job]) -> None:
        if jobs:
            self._inbox.put(list(jobs))
            self.submitted += len(jobs)

    def poll(self) -> list[Result]:
        """Every result that has arrived since the last call."""
        out: list[Result] = []
        while True:
            try:
                _, results, error = self._outbox.get_nowait()
            except queue.Empty:
                break
            out.extend(results)
            self.label_rounds += any(value is not None for _, value in results)
            if error:
                self.last_error = error
        self.completed += len(out)
        self.failed += sum(value is None for _, value in out)
        return out

    @property
    def backlog(self) -> int:
        return self.submitted - self.completed

    def alive(self) -> bool:
        return self._worker.is_alive()

    def labels_per_s(self) -> float:
        """Rate since the previous call."""
        now = time.monotonic()
        rate = (self.completed - self._rate_count) / max(now - self._rate_time, 1e-9)
        self._rate_time, self._rate_count = now, self.completed
        return rate

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._worker.join(timeout)
        if self.mode == "process" and self._worker.is_alive():
            self._worker.terminate()

