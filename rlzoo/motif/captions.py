"""Captions: the text an LLM judges, built from the in-game messages of an observation sequence."""
from collections.abc import Iterable, Sequence

import numpy as np


def decode_message(message: np.ndarray) -> str:
    """NLE's 256-byte message array → text (NUL-terminated, latin-1 so every byte decodes)."""
    raw = np.asarray(message, dtype=np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def encode_message(text: str, length: int = 256) -> np.ndarray:
    """Text → NUL-padded uint8 array, the inverse of `decode_message` (truncates long text)."""
    raw = text.encode("latin-1", errors="replace")[:length]
    out = np.zeros(length, dtype=np.uint8)
    out[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def build_caption(messages: Iterable[str]) -> str:
    """Empty messages dropped, runs of identical consecutive messages shown once with "(xN)"."""
    groups: list[list] = []
    for text in messages:
        text = text.strip()
        if not text:
            continue
        if groups and groups[-1][0] == text:
            groups[-1][1] += 1
        else:
            groups.append([text, 1])
    return " ".join(text if n == 1 else f"{text} (x{n})" for text, n in groups)


def caption_from_array(messages: np.ndarray, length: int | None = None) -> str:
    """Caption of a [L, 256] uint8 message sequence, using its first `length` rows."""
    rows: Sequence[np.ndarray] = messages if length is None else messages[:length]
    return build_caption(decode_message(m) for m in rows)
