"""Arrow tables in PostgreSQL's binary COPY format, built column by column (no Python per row).

The format: a 19-byte header, then per row an int16 field count and per field an int32 length
(-1 for NULL) and the value as the type's binary send function writes it, then an int16 -1.
All integers big-endian. Binary COPY does not convert: each value must be in the exact type of
its target column, so the encoder is given them (`pg_type.typname` per column).

How a row is built without a loop per row: every column becomes one or two Arrow binary arrays
("pieces") holding, per row, the bytes of its field. A fixed-width field (length + value) is a
fixed-size piece filled by strided byte copies (`bytearray[j::width] = ...`, a C loop per byte
position, which also turns little-endian values big-endian); a string is a 4-byte length piece
followed by the string array itself. Arrow's `binary_join_element_wise` then concatenates the
pieces row by row in C++, and its data buffer is the COPY data. A NULL field is a piece that is
NULL in Arrow, replaced by the join with the four 0xff bytes of length -1; the pieces that follow
a length (string bytes) are made non-null and empty where the value is NULL.

A column whose type or values the encoder does not take raises `Unsupported`; the caller then
copies the table as CSV.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_SINCE_2000_US = 946_684_800_000_000  # PostgreSQL's timestamps count from 2000-01-01
_SLICE_ROWS = 16_384  # rows encoded at a time (bounds the join's memory, keeps offsets 32-bit)
_TEXT = frozenset({"text", "varchar", "json"})  # json's binary form is its text
_ARRAY_ELEMENTS = {"_text": 25, "_varchar": 1043}  # array type -> element type oid
_FIXED = {"int8": 8, "int4": 4, "float8": 8, "bool": 1, "timestamp": 8, "timestamptz": 8}
SUPPORTED = _TEXT | {"jsonb"} | set(_FIXED) | set(_ARRAY_ELEMENTS)


class Unsupported(Exception):
    """A column the encoder does not write (its type, or its values in the target's type)."""


class Encoded(NamedTuple):
    columns: list[str]  # the order the rows hold the table's columns in (for COPY's list)
    data: list[pa.Buffer | bytes]  # the COPY data, in pieces to write in order


def encode(table: pa.Table, types: Mapping[str, str]) -> Encoded:
    """The binary COPY data of `table`'s rows, each column in the PostgreSQL type `types`
    names for it (`pg_type.typname`: text, int8, timestamptz, _text, ...); raises Unsupported
    when a column cannot be encoded.

    The columns are reordered so that one piece holds the start of every row: the field count,
    the columns NULL in every row and the fixed-width ones NULL in none (fewer pieces to join).
    """
    if sys.byteorder != "little":
        raise Unsupported("the encoder assumes a little-endian machine")
    for name in table.column_names:
        if types.get(name) not in SUPPORTED:
            raise Unsupported(f"column {name} of type {types.get(name)}")
    table = table.combine_chunks()
    absent = [name for name in table.column_names
              if table.column(name).null_count == table.num_rows]
    dense = [name for name in table.column_names if types[name] in _FIXED
             and name not in absent and not table.column(name).null_count]
    rest = [name for name in table.column_names if name not in absent and name not in dense]
    table = table.select(absent + dense + rest)
    rows = [_rows(table.slice(start, _SLICE_ROWS), types, len(absent), len(dense))
            for start in range(0, table.num_rows, _SLICE_ROWS)]
    return Encoded(table.column_names, [HEADER, *rows, TRAILER])


def _rows(table: pa.Table, types: Mapping[str, str], absent: int, dense: int) -> pa.Buffer:
    """The tuples of `table`, whose first `absent` columns are all NULL and next `dense` ones
    fixed-width without NULLs."""
    n = table.num_rows
    arrays = [column.chunk(0) for column in table.columns]
    names = table.column_names
    template = table.num_columns.to_bytes(2, "big") + _NULL * absent
    fields = []
    for name, array in zip(names[absent:absent + dense], arrays[absent:absent + dense],
                           strict=True):
        values, size = _values(array, types[name])
        fields.append((len(template) + 4, _little_endian(values, size), size))
        template += size.to_bytes(4, "big") + bytes(size)
    pieces = [_piece(n, template, fields, None)]
    for name, array in zip(names[absent + dense:], arrays[absent + dense:], strict=True):
        pieces.extend(_field(array, types[name]))
    joined = pc.binary_join_element_wise(*pieces, b"", null_handling="replace",
                                         null_replacement=_NULL)
    offsets = memoryview(joined.buffers()[1]).cast("i")
    return joined.buffers()[2][offsets[0]:offsets[n]]


def _field(array: pa.Array, kind: str) -> list[pa.Array]:
    """The pieces of one column: its fields' bytes, NULL where the value is NULL."""
    if array.null_count == len(array):
        return [pa.nulls(len(array), pa.binary())]
    if kind in _TEXT or kind == "jsonb":
        return _text(array, jsonb=kind == "jsonb")
    if kind in _ARRAY_ELEMENTS:
        return _text_array(array, _ARRAY_ELEMENTS[kind])
    values, size = _values(array, kind)
    return [_piece(len(values), size.to_bytes(4, "big") + bytes(size),
                   [(4, _little_endian(values, size), size)], _validity(values))]


def _values(array: pa.Array, kind: str) -> tuple[pa.Array, int]:
    """A fixed-width column's values as the PostgreSQL type stores them (little-endian), and
    their size in bytes."""
    if kind in ("int8", "int4") and pa.types.is_integer(array.type):
        try:
            return array.cast(pa.int64() if kind == "int8" else pa.int32()), _FIXED[kind]
        except pa.ArrowInvalid as exc:  # out of range: let CSV's COPY say so
            raise Unsupported(str(exc)) from None
    if kind == "float8" and pa.types.is_floating(array.type):
        return array.cast(pa.float64()), 8
    if kind == "bool" and pa.types.is_boolean(array.type):
        return array.cast(pa.uint8()), 1
    if kind in ("timestamp", "timestamptz") and pa.types.is_timestamp(array.type) and (
            array.type.unit != "ns"):
        micros = array.cast(pa.timestamp("us", array.type.tz)).cast(pa.int64())
        return pc.subtract(micros, _SINCE_2000_US), 8
    raise Unsupported(f"{array.type} for {kind}")


def _little_endian(values: pa.Array, size: int) -> bytes:
    data = values.buffers()[1]
    assert data is not None
    return memoryview(data)[values.offset * size:(values.offset + len(values)) * size].tobytes()


def _text(array: pa.Array, *, jsonb: bool) -> list[pa.Array]:
    """A length piece (jsonb: and its version byte 1) and the bytes of the strings."""
    if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
        array = array.cast(pa.string())
    if not pa.types.is_string(array.type):
        raise Unsupported(f"{array.type} for a text column")
    lengths = pc.binary_length(array)
    if jsonb:
        lengths = pc.add(lengths, 1)
    raw = _little_endian(lengths.cast(pa.int32()), 4)
    template = b"\x00\x00\x00\x00\x01" if jsonb else bytes(4)
    return [_piece(len(array), template, [(0, raw, 4)], _validity(array)), _dense(array)]


def _text_array(array: pa.Array, element_oid: int) -> list[pa.Array]:
    """A one-dimensional text[] (or varchar[]) array, as array_send writes it: length, 1
    dimension, no NULL elements, the element type, the element count, lower bound 1, then each
    element's length and bytes; an empty array has no dimension."""
    if pa.types.is_large_list(array.type):
        array = array.cast(pa.list_(array.type.value_type))
    if not pa.types.is_list(array.type):
        raise Unsupported(f"{array.type} for an array column")
    validity = _validity(array)
    if validity is not None:  # NULL lists as empty ones (a NULL slot may span elements)
        array = pc.if_else(pc.is_valid(array), array, pa.scalar([], array.type))
    lists = pa.Array.from_buffers(array.type, len(array), [None, array.buffers()[1]],
                                  offset=array.offset, children=[array.values])
    elements = lists.flatten()
    if elements.null_count:
        raise Unsupported("an array with NULL elements")
    each = pc.binary_join_element_wise(*_text(elements, jsonb=False), b"")
    starts = lists.offsets
    payload = pc.binary_join(pa.ListArray.from_arrays(pc.subtract(starts, starts[0]), each), b"")
    counts = _little_endian(pc.list_value_length(lists).cast(pa.int32()), 4)
    total = _little_endian(pc.add(pc.binary_length(payload), 20).cast(pa.int32()), 4)
    element_type = element_oid.to_bytes(4, "big")
    full = _piece(len(array), bytes(4) + b"\x00\x00\x00\x01" + bytes(4) + element_type
                  + bytes(4) + b"\x00\x00\x00\x01", [(0, total, 4), (16, counts, 4)], None)
    empty = pa.scalar(b"\x00\x00\x00\x0c" + bytes(8) + element_type, pa.binary())
    head = pc.if_else(pc.greater(pc.list_value_length(lists), 0), full, empty)
    return [_with_validity(head, validity), payload]


def _piece(n: int, template: bytes, fields: list[tuple[int, bytes, int]],
           validity: pa.Buffer | None) -> pa.Array:
    """n copies of `template`, each with the little-endian items of `fields` (at, items, size)
    written big-endian at its byte `at`; NULL where `validity` says so."""
    width = len(template)
    out = bytearray(template) * n
    for at, items, size in fields:
        for j in range(size):
            out[at + j::width] = items[size - 1 - j::size]
    fixed = pa.Array.from_buffers(pa.binary(width), n, [validity, pa.py_buffer(out)])
    return fixed.cast(pa.binary())


def _validity(array: pa.Array) -> pa.Buffer | None:
    """A validity bitmap for `array`'s rows starting at bit 0 (None: no NULLs)."""
    if not array.null_count:
        return None
    return pc.is_valid(array).buffers()[1]


def _with_validity(array: pa.Array, validity: pa.Buffer | None) -> pa.Array:
    if validity is None:
        return array
    buffers = array.buffers()
    return pa.Array.from_buffers(array.type, len(array), [validity, *buffers[1:]],
                                 offset=array.offset)


def _dense(array: pa.Array) -> pa.Array:
    """`array`'s strings as binary without NULLs (a NULL becomes empty)."""
    buffers = array.buffers()
    if array.null_count:
        offsets = memoryview(buffers[1]).cast("i")
        spanned = offsets[array.offset + len(array)] - offsets[array.offset]
        if (pc.sum(pc.binary_length(array)).as_py() or 0) != spanned:
            array = pc.fill_null(array, "")  # a NULL slot with bytes (allowed, rare)
            buffers = array.buffers()
    return pa.Array.from_buffers(pa.binary(), len(array), [None, buffers[1], buffers[2]],
                                 offset=array.offset)
