"""Who labels a pair: an LLM behind an OpenAI-compatible server, or a heuristic (ablations)."""
from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .labels import Label, parse_message_label, parse_preference
from .llm_client import ChatClient, LLMError, LLMUnreachableError
from .prompts import RETRY_PROMPT, SYSTEM_PROMPT, message_prompt, pair_prompt


@dataclass(frozen=True)
class PairItem:
    """What an annotator may look at for one pair; heuristics use the numbers, LLMs the captions."""

    index: int
    captions: tuple[str, str]
    score_gain: tuple[float, float]
    episode_return: tuple[float, float]


@dataclass(frozen=True)
class Judgement:
    index: int
    label: Label | None            # None: the request failed; the pair stays unlabelled
    reply: str | None = None       # the LLM's final reply, kept for auditing
    error: str | None = None


def compare(first: float, second: float) -> Label:
    if first > second:
        return Label.FIRST
    if second > first:
        return Label.SECOND
    return Label.TIE


def judge_pair(client: ChatClient, first: str, second: str, goal: str, retry: bool = True) -> tuple[Label, str]:
    """Ask once; if the reply has no parseable verdict and `retry` (Motif; ONI asks once), ask once
    more in the same conversation."""
    conversation = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": pair_prompt(first, second, goal)},
    ]
    reply = client.chat(conversation)
    label = parse_preference(reply)
    if label is Label.UNKNOWN and retry:
        conversation += [{"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_PROMPT}]
        reply = client.chat(conversation)
        label = parse_preference(reply)
    return label, reply


def judge_message(client: ChatClient, message: str, goal: str) -> int:
    """ONI: 1 if the LLM labels the message extremely helpful, else 0. As in the reference, a reply
    without a readable label counts as 0 and is not asked again; failed requests raise LLMError."""
    reply = client.chat([
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": message_prompt(message, goal)},
    ])
    return parse_message_label(reply) or 0


class ScoreGainAnnotator:
    """Prefers the sequence whose in-game score rose more."""

    def annotate(self, items: Iterable[PairItem]) -> Iterator[Judgement]:
        for item in items:
            yield Judgement(item.index, compare(*item.score_gain))


class EpisodeReturnAnnotator:
    """Prefers the sequence taken from the episode with the higher return."""

    def annotate(self, items: Iterable[PairItem]) -> Iterator[Judgement]:
        for item in items:
            yield Judgement(item.index, compare(*item.episode_return))


class LLMAnnotator:
    """Many requests in flight; judgements come back as they complete, in any order."""

    def __init__(self, client: ChatClient, goal: str) -> None:
        self.client = client
        self.goal = goal

    def annotate(self, items: Iterable[PairItem]) -> Iterator[Judgement]:
        width = self.client.settings.max_concurrency
        pending: dict[cf.Future, int] = {}
        source = iter(items)
        unreachable: LLMUnreachableError | None = None
        with cf.ThreadPoolExecutor(width, thread_name_prefix="llm") as pool:
            exhausted = False
            while pending or not exhausted:
                # Keep the window full but bounded, so an abort leaves little work in flight.
                while not exhausted and unreachable is None and len(pending) < 2 * width:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    pending[pool.submit(judge_pair, self.client, *item.captions, self.goal)] = item.index
                if not pending:
                    break
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        label, reply = future.result()
                    except LLMUnreachableError as exc:
                        unreachable = exc
                        yield Judgement(index, None, error=str(exc))
                    except LLMError as exc:
                        yield Judgement(index, None, error=str(exc))
                    else:
                        yield Judgement(index, label, reply)
                if unreachable is not None:
                    exhausted = True
        if unreachable is not None:
            raise unreachable
