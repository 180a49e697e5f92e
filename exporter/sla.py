"""Queue SLAs: the latency a queue promises, from the config file's `queues:` rules or its name.

Owns the naming convention (`within_5_seconds`, `billing_within_5_minutes`; the grammar and
each deliberate "no SLA" are in docs/queue-slas.md) and the precedence of rules over names.
Knows nothing of Redis or of where the rules came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from exporter.model import NO_SLA, QueueSla
from exporter.targets import QueueRule

SOURCE_CONFIG: Final = "config"
SOURCE_NAME: Final = "name"
SOURCE_NONE: Final = "none"

_KEYWORD: Final = "within"
_MAX_DIGITS: Final = 9  # after leading zeros: at most 999 999 999 of any unit

_ONES: Final = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEN_TO_TWENTY: Final = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)  # fmt: skip
_TENS: Final = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}


def _number_words() -> dict[str, int]:
    words = {word: value for value, word in enumerate(_ONES, start=1)}
    words |= {word: value for value, word in enumerate(_TEN_TO_TWENTY, start=10)}
    words |= _TENS | {"sixty": 60, "ninety": 90, "hundred": 100}
    words |= {"one_hundred": 100, "one-hundred": 100}
    for tens, tens_value in _TENS.items():
        for ones_value, ones in enumerate(_ONES, start=1):
            for joint in ("_", "-"):
                words[f"{tens}{joint}{ones}"] = tens_value + ones_value
    return words


NUMBER_WORDS: Final[dict[str, int]] = _number_words()

UNIT_SECONDS: Final[dict[str, float]] = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}


def _keyword(part: str) -> str | None:
    """`part` lower-cased if it is ASCII (so no Unicode look-alike folds into a keyword)."""
    return part.lower() if part.isascii() else None


def _amount(text: str) -> int | None:
    """The number `text` spells (digits or words, see the module docstring), else None."""
    word = _keyword(text)
    if word is None:
        return None
    if word.isdigit():  # ASCII by now, so only 0-9
        digits = word.lstrip("0")
        if not digits or len(digits) > _MAX_DIGITS:
            return None
        return int(digits)
    return NUMBER_WORDS.get(word)


def sla_from_name(queue: str) -> tuple[float, str] | None:
    """(SLA seconds, component or "") from a name ending in `within_<amount>_<unit>`, else None."""
    parts = queue.split("_")
    unit = _keyword(parts[-1])
    if unit not in UNIT_SECONDS:
        return None
    # The amount is one part (`5`, `five`, `twenty-five`) or two (`twenty_five`, `one_hundred`);
    # at most one of the two readings can have `within` in front of it.
    for amount_parts in (1, 2):
        within_at = len(parts) - 2 - amount_parts
        if within_at < 0 or _keyword(parts[within_at]) != _KEYWORD:
            continue
        amount = _amount("_".join(parts[within_at + 1 : -1]))
        if amount is None:
            return None
        if within_at and not parts[within_at - 1]:
            return None  # "_within_…" or "billing__within_…": not the convention
        return amount * UNIT_SECONDS[unit], "_".join(parts[:within_at])
    return None


class SlaResolver:
    """`(queue) -> QueueSla`: the first matching config rule, else the queue name, else none."""

    def __init__(self, rules: Sequence[QueueRule] = ()) -> None:
        self.rules = tuple(rules)

    def __call__(self, queue: str) -> QueueSla:
        """The SLA of `queue` and where it comes from."""
        named = sla_from_name(queue)
        name_seconds, name_component = named if named is not None else (None, "")
        rule = next((r for r in self.rules if r.matches(queue)), None)
        component = (rule.component if rule is not None else "") or name_component
        if rule is not None and rule.sla is not None:
            return QueueSla(rule.sla, component, SOURCE_CONFIG)
        if name_seconds is not None:
            return QueueSla(name_seconds, component, SOURCE_NAME)
        if component:
            return QueueSla(None, component, SOURCE_NONE)
        return NO_SLA
