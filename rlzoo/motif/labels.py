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
# ONI's per-message labels: two arbitrary tokens (no word the model already reads as a verdict),
# answered inside <label> ... </label>.
HELPFUL_TOKEN = "ALPHA"
UNHELPFUL_TOKEN = "OMEGA"
_LABEL_TAG = re.compile(r"<label>(.*?)</label>", re.IGNORECASE | re.DOTALL)
_TOKENS = re.compile(rf"\b({HELPFUL_TOKEN}|{UNHELPFUL_TOKEN})\b")


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


def parse_message_label(reply: str | None) -> int | None:
    """ONI's per-message verdict: 1 helpful, 0 not, None when the reply does not say.

    The last <label> tag decides; without one, a reply naming exactly one of the tokens does. A tag
    (or reply) naming both tokens, as when the format line is echoed, says nothing.
    """
    if not reply:
        return None
    tags = _LABEL_TAG.findall(reply)
    found = set(_TOKENS.findall(tags[-1] if tags else reply))
    if len(found) != 1:
        return None
    return int(found.pop() == HELPFUL_TOKEN)
