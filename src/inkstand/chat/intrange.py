"""GBNF for the integers of a range, written without leading zeros: JSON integer bounds.

    integer_range(-5, 12)  ->  ("-" ([1-5]) | ([0-9] | "1" [0-2]))

Either bound may be None (unbounded). The digits are split the way a regex for a numeric
range is written: per digit count, then per leading digit.
"""

from __future__ import annotations

import math


def integer_bounds(schema: dict) -> tuple[int | None, int | None]:
    """The inclusive integer bounds a schema's `minimum`/`maximum`/`exclusive*` allow."""
    low = high = None
    if "minimum" in schema:
        low = math.ceil(schema["minimum"])
    if "exclusiveMinimum" in schema:
        exclusive = math.floor(schema["exclusiveMinimum"]) + 1
        low = exclusive if low is None else max(low, exclusive)
    if "maximum" in schema:
        high = math.floor(schema["maximum"])
    if "exclusiveMaximum" in schema:
        exclusive = math.ceil(schema["exclusiveMaximum"]) - 1
        high = exclusive if high is None else min(high, exclusive)
    return low, high


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression matching the integers in [low, high]; the range must not be empty."""
    assert low is None or high is None or low <= high
    parts = []
    if low is None or low < 0:  # the negative part: "-" and a magnitude
        top = None if low is None else -low
        bottom = 1 if high is None or high >= 0 else -high
        parts.append(f'"-" ({_magnitudes(bottom, top)})')
    if high is None or high >= 0:
        parts.append(f"({_magnitudes(max(low or 0, 0), high)})")
    return "(" + " | ".join(parts) + ")"


def _magnitudes(low: int, high: int | None) -> str:
    """Non-negative integers in [low, high] (high None: unbounded)."""
    alternatives = []
    digits = len(str(low))
    last = len(str(high)) if high is not None else digits
    for count in range(digits, last + 1):
        start = low if count == digits else 10 ** (count - 1)
        end = high if high is not None and count == last else 10**count - 1
        alternatives.append(_same_length(str(start), str(end)))
    if high is None:  # and every longer number
        alternatives.append("[1-9] " + " ".join(["[0-9]"] * digits) + " [0-9]*")
    return " | ".join(alternatives)


def _same_length(low: str, high: str) -> str:
    """Digit strings of one length between `low` and `high`, inclusive."""
    if not low:
        return '""'
    if low == high:
        return f'"{low}"'
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return " ".join([_digits(low[0], high[0])] + ["[0-9]"] * rest)
    if low[0] == high[0]:
        return f'"{low[0]}" ({_same_length(low[1:], high[1:])})'
    out = [f'"{low[0]}" ({_same_length(low[1:], "9" * rest)})']
    if int(high[0]) - int(low[0]) > 1:
        middle = _digits(str(int(low[0]) + 1), str(int(high[0]) - 1))
        out.append(" ".join([middle] + ["[0-9]"] * rest))
    out.append(f'"{high[0]}" ({_same_length("0" * rest, high[1:])})')
    return " | ".join(out)


def _digits(low: str, high: str) -> str:
    return f'"{low}"' if low == high else f"[{low}-{high}]"
