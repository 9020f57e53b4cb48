"""Sizes, rates and durations for people: one unit system (IEC, powers of 1024) everywhere, so a
size and the rate beside it always use the same units (``1.50 GiB``, ``721 MiB/s``)."""

from __future__ import annotations

from typing import Optional

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def size(count: Optional[float]) -> str:
    """``512 B``, ``1.00 KiB``, ``42.3 MiB``, ``1.50 GiB``: three significant figures."""
    if count is None:
        return "?"
    value, unit = float(count), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return "%d B" % int(value)
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return "%.*f %s" % (digits, value, _UNITS[unit])


def rate(per_second: Optional[float]) -> str:
    return "?/s" if per_second is None else size(per_second) + "/s"


def duration(seconds: Optional[float]) -> str:
    """``0:07``, ``12:34``, ``1:02:03``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 100 * 365 * 86400:
        return "?"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "%d:%02d:%02d" % (hours, minutes, secs) if hours else "%d:%02d" % (minutes, secs)
