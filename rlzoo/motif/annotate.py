"""Annotate step: caption every pair, ask the annotator, append each label to labels.jsonl at once.

labels.jsonl holds one JSON object per labelled pair (`index`, `label`, and the LLM's `reply` when
kept). A rerun reads it, skips what is there and asks only for the rest; a line cut short by a crash
is dropped. labels.meta.json records who labelled (annotator, goal, model) so that a resumed run
cannot silently mix two annotators in one file.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from .annotators import Judgement, PairItem
from .captions import caption_from_array
from .dataset import PairDataset
from .labels import Label


class PairAnnotator(Protocol):
    def annotate(self, items: Iterator[PairItem]) -> Iterator[Judgement]: ...


_LABELS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_labels_name(name: str) -> str:
    """Labels files live inside the dataset directory: the name is a plain file stem, not a path."""
    if not isinstance(name, str) or not _LABELS_NAME.fullmatch(name):
        raise ValueError(f"labels_name={name!r} must be a plain file name (letters, digits, '_', '.', '-'), not a path")
    return name


def read_labels(path: str | os.PathLike) -> dict[int, Label]:
    """index → label of every complete line; a partial last line (interrupted write) is ignored."""
    labels: dict[int, Label] = {}
    path = Path(path)
    if not path.exists():
        return labels
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            record = json.loads(line)
            labels[int(record["index"])] = Label[record["label"]]
    return labels


def _truncate_partial_line(path: Path) -> None:
    """Cut a trailing partial line so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _check_identity(meta_path: Path, identity: dict[str, Any]) -> None:
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        if previous != identity:
            raise ValueError(
                f"{meta_path.parent} was labelled by {previous}, not {identity}; "
                "choose another labels file (annotate.labels_name) to label with a different annotator"
            )
    else:
        meta_path.write_text(json.dumps(identity, indent=1))


def pair_items(dataset: PairDataset, indices: np.ndarray) -> Iterator[PairItem]:
    for i in indices:
        i = int(i)
        lengths = dataset.arrays["length"][i]
        captions = tuple(caption_from_array(dataset.arrays["messages"][i, s], int(lengths[s])) for s in (0, 1))
        yield PairItem(
            index=i,
            captions=captions,  # type: ignore[arg-type]
            score_gain=tuple(float(x) for x in dataset.arrays["score_gain"][i]),  # type: ignore[arg-type]
            episode_return=tuple(float(x) for x in dataset.arrays["episode_return"][i]),  # type: ignore[arg-type]
        )


def annotate(
    dataset_dir: str | os.PathLike,
    annotator: PairAnnotator,
    identity: dict[str, Any],
    labels_name: str = "labels",
    keep_replies: bool = True,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Label the dataset's pairs not yet in `<labels_name>.jsonl`. Returns the label counts, the
    number of failed requests (left unlabelled, retried by the next run) and the time taken."""
    check_labels_name(labels_name)
    dataset = PairDataset.open(dataset_dir)
    labels_path = dataset.path / f"{labels_name}.jsonl"
    _check_identity(dataset.path / f"{labels_name}.meta.json", identity)
    _truncate_partial_line(labels_path)
    done = read_labels(labels_path)
    total = dataset.count if limit is None else min(limit, dataset.count)
    todo = np.array([i for i in range(total) if i not in done], dtype=np.int64)
    counts: Counter[str] = Counter(label.name for label in done.values())
    failed = 0
    start = time.monotonic()
    bar = tqdm(total=len(todo), desc="annotate", unit="pair", disable=not progress, dynamic_ncols=True)

    def asked() -> Iterator[PairItem]:
        # Identical captions need no judge: they are a tie by definition.
        for item in pair_items(dataset, todo):
            if item.captions[0] == item.captions[1]:
                write(Judgement(item.index, Label.TIE))
            else:
                yield item

    def write(judgement: Judgement) -> None:
        nonlocal failed
        if judgement.label is None:
            failed += 1
        else:
            record: dict[str, Any] = {"index": judgement.index, "label": judgement.label.name}
            if keep_replies and judgement.reply is not None:
                record["reply"] = judgement.reply
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            counts[judgement.label.name] += 1
        bar.update(1)
        bar.set_postfix({name: counts[name] for name in ("FIRST", "SECOND", "TIE", "UNKNOWN")} | {"failed": failed}, refresh=False)

    with labels_path.open("a", encoding="utf-8") as handle:
        try:
            for judgement in annotator.annotate(asked()):
                write(judgement)
        finally:
            handle.flush()
            os.fsync(handle.fileno())
            bar.close()
    elapsed = time.monotonic() - start
    return {
        "labelled": sum(counts.values()),
        "new": len(todo) - failed,
        "failed": failed,
        "counts": dict(counts),
        "seconds": elapsed,
        "pairs_per_s": (len(todo) - failed) / elapsed if elapsed > 0 else 0.0,
        "labels_path": str(labels_path),
    }
