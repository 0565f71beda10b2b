"""Hex categoricals from pyarrow binary columns to uint32 values, vectorised: one-hot fields and bags.

The rule (see `data_prep.parse`): a value is 1 to 8 hex digits, either case, read as a 32-bit value;
an empty field is missing (0) or, for a bag, an empty bag. These decoders work on the columns' raw
offset and data buffers because pyarrow has no hex-to-integer kernel, and a per-value Python or
per-character numpy decode cost as much as the whole CSV parse.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_LOW_BITS = np.uint64(0x0101010101010101)
_LOWERCASE_BIT = np.uint64(0x2020202020202020)


def decode_hex_words(words: np.ndarray) -> np.ndarray:
    """Decodes uint64 words, each 8 ASCII hex digits (first digit in the lowest byte), to uint32.

    Bit-parallel instead of a per-character table lookup: a digit's nibble is its low 4 bits, plus 9
    for letters (bit 6 set), and three shift-or steps pack 8 nibbles into 32 bits. About 6x faster than
    a gather per character in numpy, which made hex decoding as costly as the CSV parse itself.
    """
    chars = words.byteswap() | _LOWERCASE_BIT
    nibbles = (chars & _LOW_NIBBLES) + ((chars >> np.uint64(6)) & _LOW_BITS) * np.uint64(9)
    nibbles = (nibbles | (nibbles >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    nibbles = (nibbles | (nibbles >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    nibbles = (nibbles | (nibbles >> np.uint64(16))) & np.uint64(0xFFFFFFFF)
    return nibbles.astype(np.uint32)


def _all_hex_digits(raw: np.ndarray) -> np.ndarray:
    """For uint8 data of 8-byte words, True per word whose 8 bytes are all 0-9, a-f or A-F."""
    is_digit = (raw - np.uint8(48)) < 10
    is_letter = ((raw | np.uint8(0x20)) - np.uint8(97)) < 6
    return (is_digit | is_letter).view(np.uint64) == _LOW_BITS


def offsets_and_data(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offset_type = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], offset_type)[array.offset : array.offset + len(array) + 1]
    data_buffer = array.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def decode_hex_column(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a binary column of 0-8 hex digits to uint32 values (empty -> 0).

    Returns:
        (values, invalid): uint32 values and a bool mask of entries that are not 1 to 8 hex digits.
    """
    offsets, data = offsets_and_data(array)
    lengths = np.diff(offsets)
    present = lengths != 0
    values = np.zeros(len(array), np.uint32)
    invalid = lengths > 8
    if ((lengths == 8) | ~present).all():
        # Real Criteo values are always 8 digits or missing, so the present values' bytes lie back to
        # back in the data buffer: view them as one uint64 word each, no gather needed.
        raw = np.ascontiguousarray(data[offsets[0] : offsets[-1]])
        words = raw.view(np.uint64)
        values[present] = decode_hex_words(words)
        invalid[present] = ~_all_hex_digits(raw)
        return values, invalid
    short = present & ~invalid
    starts = offsets[:-1][short]
    short_lengths = lengths[short]
    # Left-pad with '0' by gathering each value's bytes right-aligned in an 8-byte window.
    positions = starts[:, None] + short_lengths[:, None] - 8 + np.arange(8)
    in_value = np.arange(8) >= (8 - short_lengths[:, None])
    raw = np.where(in_value, data[np.clip(positions, 0, max(len(data) - 1, 0))], np.uint8(48))
    raw = np.ascontiguousarray(raw.astype(np.uint8)).ravel()
    values[short] = decode_hex_words(raw.view(np.uint64))
    invalid[short] = ~_all_hex_digits(raw)
    return values, invalid


def _decode_eight_digit_bags(array: pa.Array) -> pa.ListArray | None:
    """The bags of a column in which every value has 8 hex digits (as in real and MLPerf data), or None.

    A field of k such values is 9k - 1 bytes with a comma every 9th byte: with one byte added at the
    end of each field the column's bytes are rows of 9, 8 digits and a comma, and the values are read
    from that grid without splitting the fields into strings. Any field that does not fit (a shorter
    or malformed value) returns None, and the general path decides.
    """
    offsets, data = offsets_and_data(array)
    lengths = np.diff(offsets)
    counts = (lengths + 1) // 9
    if (lengths != 9 * counts - 1)[lengths != 0].any():
        return None
    bag_offsets = np.zeros(len(array) + 1, np.int32)
    np.cumsum(counts, out=bag_offsets[1:])
    field_ends = (offsets[1:] - offsets[0])[counts > 0]
    grid = np.insert(data[offsets[0] : offsets[-1]], field_ends, np.uint8(ord(","))).reshape(-1, 9)
    raw = np.ascontiguousarray(grid[:, :8]).ravel()
    if not ((grid[:, 8] == ord(",")).all() and _all_hex_digits(raw).all()):
        return None
    return pa.ListArray.from_arrays(pa.array(bag_offsets), pa.array(decode_hex_words(raw.view(np.uint64))))


def decode_hex_bags(array: pa.Array) -> tuple[pa.ListArray, np.ndarray]:
    """Decodes a binary column of comma-separated hex values into bags of uint32 values.

    An empty field is an empty bag; an empty value inside a non-empty field (`a,,b`, `a,`) is invalid.

    Returns:
        (bags, invalid): a `list<uint32>` array with one bag per entry, and a bool mask of the entries
        holding a value that is not 1 to 8 hex digits (their bags are incomplete: drop those rows).
    """
    bags = _decode_eight_digit_bags(array)
    if bags is not None:
        return bags, np.zeros(len(array), bool)
    parts = pc.split_pattern(array, ",")
    # Every value of every bag in one flat binary array: the one-hot decoder does the digit work.
    flat = parts.flatten()
    values, invalid_values = decode_hex_column(flat)
    parents = pc.list_parent_indices(parts).to_numpy()
    value_offsets, _ = offsets_and_data(flat)
    empty_values = np.diff(value_offsets) == 0
    field_offsets, _ = offsets_and_data(array)
    empty_fields = np.diff(field_offsets) == 0
    # split_pattern turns an empty field into one empty value: that is the empty bag, not an error.
    invalid_values |= empty_values & ~empty_fields[parents]
    invalid = np.bincount(parents[invalid_values], minlength=len(array)) > 0
    kept = ~empty_values
    lengths = np.bincount(parents[kept], minlength=len(array))
    offsets = np.zeros(len(array) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[kept])), invalid
