"""Preference labels and the parser that reads them out of an LLM's reply."""
import enum
import re


class Label(enum.IntEnum):
    """Stored as int8 on disk; TIE counts as 0.5 in training, UNKNOWN is dropped."""

    FIRST = 0
    SECOND = 1
    TIE = 2
    UNKNOWN = 3


# The prompt asks for a final line `("best_description": 1 | 2 | None)`; models vary in quoting,
# spacing and case, so accept those variations but nothing looser.
_CHOICE = re.compile(
    r"""["'`]?best[_ ]description["'`]?\s*[:=]\s*["'`]?(1|2|none|null|neither)\b""",
    re.IGNORECASE,
)
_HELPFUL = re.compile(r"""["'`]?helpful["'`]?\s*[:=]\s*["'`]?(1|0|yes|no|true|false)\b""", re.IGNORECASE)


def parse_preference(reply: str | None) -> Label:
    """The last declaration in the reply wins (models often quote the format before answering)."""
    if not reply:
        return Label.UNKNOWN
    matches = _CHOICE.findall(reply)
    if not matches:
        return Label.UNKNOWN
    choice = matches[-1].lower()
    if choice == "1":
        return Label.FIRST
    if choice == "2":
        return Label.SECOND
    return Label.TIE


def parse_helpful(reply: str | None) -> int | None:
    """ONI's per-message judgement: 1 helpful, 0 not, None when the reply has no declaration."""
    if not reply:
        return None
    matches = _HELPFUL.findall(reply)
    if not matches:
        return None
    return 1 if matches[-1].lower() in ("1", "yes", "true") else 0
