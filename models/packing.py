"""Exact, compact encodings of number sequences, for the pickles of per-card state.

Each card's state is pickled into every recovery snapshot, and there are millions of
cards, so its numbers are stored in as few bits as they need, and never approximately:
``unpack_*(pack_*(x))`` gives back ``x`` exactly, bit for bit. Sequences that do not fit
the compact form (a timestamp with a fraction of a second, an amount that is not a whole
number of cents) are stored as raw little-endian doubles instead.

>>> from array import array
>>> times = array("d", [1_522_540_831.0, 1_522_541_000.0, 1_522_627_200.0])
>>> len(pack_times(times)), len(times.tobytes())
(15, 24)
>>> unpack_times(pack_times(times), 3) == times
True
>>> amounts = array("d", [57.16, 0.01, 1234.5])
>>> len(pack_amounts(amounts)), unpack_amounts(pack_amounts(amounts), 3) == amounts
(9, True)
>>> unpack_uints(pack_uints([0, 5, 2]), 3)
[0, 5, 2]

"""

from __future__ import annotations

import itertools
import math
import operator
import sys
from array import array
from collections.abc import Sequence

__all__ = [
    "pack_amounts",
    "pack_int64",
    "pack_times",
    "pack_uints",
    "unpack_amounts",
    "unpack_int64",
    "unpack_times",
    "unpack_uints",
]

_RAW = 0  # raw little-endian float64
_COMPACT = 1  # whole seconds as deltas, or whole cents

_BIG_ENDIAN = sys.byteorder == "big"
# Whole-second times are kept as integers; the first one in 8 signed bytes.
_LIMIT = 2.0**62


def pack_uints(values: Sequence[int]) -> bytes:
    """Non-negative integers in the fewest bits that hold the largest: one byte that says
    how many, then the values, the first in the lowest bits."""
    width = max(values, default=0).bit_length()
    if width == 0:
        return b"\x00"
    if width > 255 or min(values) < 0:
        raise ValueError("pack_uints takes integers in [0, 2**255)")
    bits = "".join(map(format, reversed(values), itertools.repeat(f"0{width}b")))
    return bytes((width,)) + int(bits, 2).to_bytes((len(bits) + 7) // 8, "little")


def unpack_uints(data: bytes, count: int) -> list[int]:
    """The ``count`` integers packed by ``pack_uints``."""
    width = data[0]
    if width == 0:
        return [0] * count
    total = width * count
    number = int.from_bytes(data[1:], "little")
    if number.bit_length() > total or len(data) - 1 != (total + 7) // 8:
        raise ValueError(f"not {count} integers of {width} bits")
    bits = format(number, f"0{total}b")
    return [int(bits[end - width : end], 2) for end in range(total, 0, -width)]


def _raw(values: Sequence[float]) -> bytes:
    doubles = array("d", values)
    if _BIG_ENDIAN:
        doubles.byteswap()
    return bytes((_RAW,)) + doubles.tobytes()


def _unraw(data: bytes, count: int) -> array[float]:
    doubles = array("d")
    doubles.frombytes(data[1:])
    if _BIG_ENDIAN:
        doubles.byteswap()
    if len(doubles) != count:
        raise ValueError(f"{len(doubles)} doubles, not {count}")
    return doubles


def pack_times(times: Sequence[float]) -> bytes:
    """Times in time order: as gaps in whole seconds when they are whole seconds.

    A month of a card's transactions, half a day apart, takes about 19 bits each
    instead of 64.
    """
    whole = bool(times) and all(map(float.is_integer, times))
    if whole and -_LIMIT <= min(times) and max(times) <= _LIMIT:  # noqa: SIM300
        seconds = list(map(int, times))
        gaps = list(map(operator.sub, seconds[1:], seconds[:-1]))
        if min(gaps, default=0) >= 0:
            start = seconds[0].to_bytes(8, "little", signed=True)
            return bytes((_COMPACT,)) + start + pack_uints(gaps)
    return _raw(times)


def unpack_times(data: bytes, count: int) -> array[float]:
    """The ``count`` times packed by ``pack_times``."""
    if data[0] == _RAW:
        return _unraw(data, count)
    start = int.from_bytes(data[1:9], "little", signed=True)
    gaps = unpack_uints(data[9:], count - 1) if count else []
    return array("d", itertools.accumulate(gaps, initial=start) if count else [])


def pack_amounts(amounts: Sequence[float]) -> bytes:
    """Amounts as whole cents when every one of them is exactly one (a double such as
    57.16 is the double nearest to 5716 / 100, which is how it is read back)."""
    try:
        cents = list(map(round, map((100.0).__mul__, amounts)))
    except (OverflowError, ValueError):  # infinity or NaN
        return _raw(amounts)
    if (
        min(cents, default=0) >= 0
        and max(cents, default=0) < 2**64
        and all(map(operator.eq, map((100).__rtruediv__, cents), amounts))
        # -0.0 equals 0 cents but would come back as +0.0
        and (0 not in cents or all(math.copysign(1.0, a) > 0 for a in amounts))
    ):
        return bytes((_COMPACT,)) + pack_uints(cents)
    return _raw(amounts)


def unpack_amounts(data: bytes, count: int) -> array[float]:
    """The ``count`` amounts packed by ``pack_amounts``."""
    if data[0] == _RAW:
        return _unraw(data, count)
    return array("d", map((100).__rtruediv__, unpack_uints(data[1:], count)))


def pack_int64(values: array[int]) -> bytes:
    """64-bit integers (an ``array("q")``) as 8 little-endian bytes each."""
    if _BIG_ENDIAN:
        values = array("q", values)
        values.byteswap()
    return values.tobytes()


def unpack_int64(data: bytes) -> array[int]:
    """The integers packed by ``pack_int64``."""
    values = array("q")
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    return values
