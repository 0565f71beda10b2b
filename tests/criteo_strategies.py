"""Hypothesis strategies for Criteo TSV text: valid lines of every legal shape, and every malformation.

Valid lines hold missing values in any field, integers near the int64 limits, leading zeros, labels
like `01`, hex of 1 to 8 digits in either case (and comma-separated bags for multi-hot). Malformed
lines break one or more rules at once (so the first reason that applies matters), including bytes
that are not UTF-8 and carriage returns inside a field.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

NUM_DENSE = 13
NUM_SPARSE = 26
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

VALID_LABELS = [b"0", b"1", b"00", b"01", b"-0", b"0000000000000000000000001"]
BAD_LABELS = [
    b"",
    b"2",
    b"-1",
    b"a",
    b" 1",
    b"1 ",
    b"+1",
    b"0x1",
    b"1.0",
    b"99999999999999999999",
    b"\xff",
    b"1\r",
]
BAD_DENSE = [
    b"abc", b"1.5", b" 5", b"5 ", b"0x10", b"0X1f", b"+5", b"-", b"--5", b"1e3", b"-0x5",
    b"9223372036854775808", b"-9223372036854775809", b"00000000000000000000009223372036854775808",
    b"\xff\xfe", b"5\r", b"\r", b"\x00", b"\xc3\xa9", b"1,2",
]  # fmt: skip
BAD_HEX = [
    b"123456789",
    b"xyz",
    b"0x12",
    b" ab",
    b"ab ",
    b"-1",
    b"g",
    b"\xff",
    b"a\r",
    b"\x00",
    b"\xc3\xa9",
    b"+1",
]
BAD_ONE_HOT = [*BAD_HEX, b"a,b", b","]
BAD_BAGS = [*BAD_HEX, b"a,,b", b"a,", b",a", b",", b"123456789,a", b"a, b", b"a,\xff"]
ENDINGS = [b"\n", b"\r\n"]


# Field values come from a `random.Random` seeded by one hypothesis draw per line: drawing 40 fields
# one hypothesis draw at a time made a few thousand lines take minutes. Hypothesis still chooses the
# chunk's shape (how many lines, which are bad, their endings) and shrinks a failure to few lines.
EDGE_INTEGERS = [INT64_MIN, INT64_MAX, INT64_MAX - 1, INT64_MIN + 1, 0, -1, 2**53 + 1, 2**24 + 1]
HEX = "0123456789abcdefABCDEF"


def integer_text(rng: random.Random) -> bytes:
    """Decimal integers by the format's rules: int64 range, extremes, leading zeros, a minus sign."""
    choice = rng.randrange(4)
    if choice == 0:
        return str(rng.randint(INT64_MIN, INT64_MAX)).encode()
    if choice == 1:
        return str(rng.randint(-1000, 100_000)).encode()
    if choice == 2:
        return str(rng.choice(EDGE_INTEGERS)).encode()
    sign = "-" if rng.random() < 0.5 else ""
    return f"{sign}{'0' * rng.randint(1, 25)}{rng.randint(0, INT64_MAX)}".encode()


def hex_value(rng: random.Random) -> bytes:
    return "".join(rng.choice(HEX) for _ in range(rng.randint(1, 8))).encode()


def categorical_field(rng: random.Random, multi_hot: bool) -> bytes:
    if multi_hot:
        return b",".join(hex_value(rng) for _ in range(rng.randint(0, 4)))
    return b"" if rng.random() < 0.3 else hex_value(rng)


def valid_fields(rng: random.Random, multi_hot: bool = False) -> list[bytes]:
    label = rng.choice(VALID_LABELS)
    dense = [b"" if rng.random() < 0.3 else integer_text(rng) for _ in range(NUM_DENSE)]
    return [label, *dense, *(categorical_field(rng, multi_hot) for _ in range(NUM_SPARSE))]


def malformed_fields(rng: random.Random, multi_hot: bool = False) -> bytes:
    """A line that breaks at least one rule; several breaks at once test which reason comes first."""
    kind = rng.choice(["fields", "empty", "garbage", "values", "values"])
    if kind == "empty":
        return b""
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))).replace(b"\n", b"")
    fields = valid_fields(rng, multi_hot)
    breaks = [
        rng.choice(["drop", "extra", "label", "dense", "categorical"]) for _ in range(rng.randint(1, 3))
    ]
    if kind == "fields" and "drop" not in breaks and "extra" not in breaks:
        breaks.append("drop")
    for what in breaks:
        if what == "label":
            fields[0] = rng.choice(BAD_LABELS)
        elif what == "dense":
            fields[rng.randint(1, NUM_DENSE)] = rng.choice(BAD_DENSE)
        elif what == "categorical":
            fields[rng.randint(1 + NUM_DENSE, NUM_DENSE + NUM_SPARSE)] = rng.choice(
                BAD_BAGS if multi_hot else BAD_ONE_HOT
            )
    for what in breaks:
        if what == "drop" and fields:
            del fields[rng.randrange(len(fields))]
        elif what == "extra":
            fields.insert(rng.randint(0, len(fields)), rng.choice([b"", b"1", b"0a"]))
    return b"\t".join(fields)


SEEDS = st.integers(0, 2**32 - 1)


def valid_line(multi_hot: bool = False) -> st.SearchStrategy[bytes]:
    return SEEDS.map(lambda seed: b"\t".join(valid_fields(random.Random(seed), multi_hot)))


def malformed_line(multi_hot: bool = False) -> st.SearchStrategy[bytes]:
    return SEEDS.map(lambda seed: malformed_fields(random.Random(seed), multi_hot))


@st.composite
def criteo_text(draw, multi_hot: bool = False, max_lines: int = 25, bad_share: float | None = None) -> bytes:
    """Lines joined with LF or CRLF endings; the last may lack its ending.

    Args:
        multi_hot: categoricals are bags.
        max_lines: the most lines.
        bad_share: None for any mix (chunks with and without bad lines); 0 for valid lines only.
    """
    count = draw(st.integers(0, max_lines))
    lines = []
    for _ in range(count):
        bad = bad_share != 0 and draw(st.integers(0, 3)) == 0
        lines.append(draw(malformed_line(multi_hot) if bad else valid_line(multi_hot)))
    endings = [draw(st.sampled_from(ENDINGS)) for _ in lines]
    if lines and draw(st.booleans()):
        endings[-1] = b""
    return b"".join(line + ending for line, ending in zip(lines, endings, strict=True))
