"""Journal records: framing, checking and scanning kernels over uint8 buffers.

A journal segment (see :mod:`ringbook.engine.journal` for files and headers) is a
header followed by records, each 8-byte aligned. All integers little-endian.

Record layout (version 1)
-------------------------
======  =====  ===============================================================
offset  type   field
======  =====  ===============================================================
0       u32    CRC32C over bytes ``[4, 40 + pad8(L))``: the rest of the
               header, the payload and its zero padding
4       u32    payload length ``L`` in bytes (at most :data:`MAX_PAYLOAD`)
8       i64    sequence: gapless within a stream, from 0
16      i64    receive TSC ticks (the ring slot's stamp), or 0
24      i64    receive wall clock, ns since the Unix epoch (UTC)
32      u16    record kind (``RECORD_*``)
34      u16    reserved, 0
36      u32    flags, the producer's to define
40      bytes  payload, then zeros up to the next multiple of 8
======  =====  ===============================================================

A record therefore takes ``40 + pad8(L)`` bytes (a 64-byte event: 104).
Kinds other than :data:`RECORD_DATA` are the engine's own events, so that a
replay sees what the live run saw; their payload is up to the engine
(:data:`RECORD_DROPS` conventionally carries an int64 count).

Checking a record (:func:`check_record`) distinguishes a record that runs past
the end of the data (:data:`CORRUPT_LENGTH`: a torn write when it is the last
thing in a file), a checksum mismatch and a sequence out of order. A run of
zeros never checks: the CRC32C of a zero header is not zero.

Segment state
-------------
Framing kernels keep their place in a small int64 array (``SEGMENT_*``
indices): the next sequence, the file offset of the caller's buffer, the
running maximum receive time and the sparse index they fill: every
``SEGMENT_INDEX_EVERY``-th record of a segment gets an entry ``(sequence,
file offset, maximum receive ns of the records before it)``. That maximum
only grows, so a binary search over it finds the first record at or after a
time even when wall clock steps back.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from ringbook.kernels import ring as ring_kernels
from ringbook.kernels.crc32c import crc32c, load_u32, load_u64, pointer_at, update_half_word, update_word
from ringbook.kernels.jit_options import inline_kernel, kernel, llvm_inline_kernel
from ringbook.kernels.status import (BAD_ARGUMENT, CORRUPT_CHECKSUM, CORRUPT_LENGTH, CORRUPT_SEQUENCE, EMPTY,
                                     FULL, OK, TOO_LARGE)

# Record kinds. Values are part of the format: append, never renumber.
RECORD_DATA = 0          # a message or event as received
RECORD_GAP = 1           # the engine saw a sequence gap in the feed
RECORD_DISCONNECT = 2    # the feed's connection was lost
RECORD_RECONNECT = 3     # the feed's connection is back
RECORD_BOOK_RESET = 4    # the book was cleared and resynchronised
RECORD_DROPS = 5         # messages dropped before the journal (payload: int64 count)
RECORD_CHECKPOINT = 6    # a marker the engine placed (payload: its own)

RECORD_KIND_NAMES = {
    RECORD_DATA: "data", RECORD_GAP: "gap", RECORD_DISCONNECT: "disconnect",
    RECORD_RECONNECT: "reconnect", RECORD_BOOK_RESET: "book_reset", RECORD_DROPS: "drops",
    RECORD_CHECKPOINT: "checkpoint",
}

# Record header: byte offsets.
CRC_OFFSET = 0
LENGTH_OFFSET = 4
SEQUENCE_OFFSET = 8
TSC_OFFSET = 16
WALL_OFFSET = 24
KIND_OFFSET = 32
FLAGS_OFFSET = 36
RECORD_HEADER_BYTES = 40
ALIGNMENT = 8
#: The longest payload a record may claim; longer is corruption.
MAX_PAYLOAD = 1 << 30
INT64_MIN = -(1 << 63)

# Segment state: indices into its int64 array.
SEGMENT_NEXT_SEQUENCE = 0   # the sequence the next framed record gets
SEGMENT_FIRST_SEQUENCE = 1  # the segment's first sequence (the index counts from it)
SEGMENT_BASE = 2            # file offset of byte 0 of the buffer being framed into
SEGMENT_MAX_NS = 3          # greatest receive ns framed so far in the segment
SEGMENT_INDEX_EVERY = 4     # records between index entries
SEGMENT_INDEX_COUNT = 5     # index entries filled
SEGMENT_RECORDS = 6         # records framed in the segment
SEGMENT_LAST_NS = 7         # receive ns of the last record framed
SEGMENT_NEXT_ENTRY = 8      # the sequence from which the next record gets an index entry
SEGMENT_STATE_SIZE = 9

# Sparse index entries: columns of an (n, 3) int64 array.
INDEX_SEQUENCE = 0
INDEX_OFFSET = 1
INDEX_MAX_NS_BEFORE = 2
INDEX_COLUMNS = 3

# Scan summary: indices into the int64 array :func:`scan_records` fills.
SCAN_END = 0            # offset after the last good record
SCAN_RECORDS = 1        # good records
SCAN_NEXT_SEQUENCE = 2  # sequence after the last good record
SCAN_STATUS = 3         # why the scan stopped: EMPTY at the end, else the bad record's status
SCAN_MAX_NS = 4
SCAN_FIRST_NS = 5
SCAN_LAST_NS = 6
SCAN_DATA_RECORDS = 7
SCAN_SIZE = 8


@inline_kernel
def _u32(buffer, offset):
    return load_u32(buffer, offset)


@inline_kernel
def _i64(buffer, offset):
    return np.int64(load_u64(buffer, offset))


@intrinsic
def _copy_bytes(typingctx, source, source_offset, target, target_offset, length):
    """``memcpy`` of ``length`` bytes between uint8 arrays at byte offsets, unchecked, not overlapping."""
    def codegen(context, builder, sig, args):
        source_pointer = pointer_at(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        target_pointer = pointer_at(context, builder, sig.args[2], args[2], sig.args[3], args[3])
        count = context.cast(builder, args[4], sig.args[4], types.intp)
        cgutils.raw_memcpy(builder, target_pointer, source_pointer, count, 1)
        return context.get_dummy_value()

    return types.void(source, source_offset, target, target_offset, length), codegen


@intrinsic
def _address(typingctx, array):
    """The address of an array's first byte, as an integer; valid while the array is alive.

    The record writer below takes addresses rather than arrays: an array passed
    to an inlined function is reference counted (two atomic operations a call),
    an integer is not.
    """
    def codegen(context, builder, sig, args):
        data = make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return types.int64(array), codegen


def _load_at_codegen(width):
    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], ir.IntType(width).as_pointer())
        value = builder.load(pointer, align=1)
        return builder.zext(value, ir.IntType(64)) if width < 64 else value

    return codegen


def _store_at_codegen(width):
    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], ir.IntType(width).as_pointer())
        value = context.cast(builder, args[1], sig.args[1], types.int64)
        if width < 64:
            value = builder.trunc(value, ir.IntType(width))
        builder.store(value, pointer, align=1)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _load_i64_at(typingctx, address):
    """The little-endian int64 at ``address``, unaligned, unchecked."""
    return types.int64(address), _load_at_codegen(64)


@intrinsic
def _load_u32_at(typingctx, address):
    """The little-endian uint32 at ``address`` (as an int64), unaligned, unchecked."""
    return types.int64(address), _load_at_codegen(32)


@intrinsic
def _load_u16_at(typingctx, address):
    """The little-endian uint16 at ``address`` (as an int64), unaligned, unchecked."""
    return types.int64(address), _load_at_codegen(16)


@intrinsic
def _load_u8_at(typingctx, address):
    """The byte at ``address`` (as an int64), unchecked."""
    return types.int64(address), _load_at_codegen(8)


@intrinsic
def _store_i64_at(typingctx, address, value):
    """Store ``value`` as 8 little-endian bytes at ``address``, unaligned, unchecked."""
    return types.void(address, value), _store_at_codegen(64)


@intrinsic
def _store_u32_at(typingctx, address, value):
    """Store the low 32 bits of ``value`` at ``address``, unaligned, unchecked."""
    return types.void(address, value), _store_at_codegen(32)


@inline_kernel
def _tail_word(address, count):
    """The ``count`` (1 to 7) bytes at ``address`` as a little-endian word, zeros above: a
    record's final 8 bytes with their padding. Straight-line loads, no loop."""
    word = np.int64(0)
    shift = 0
    if count >= 4:
        word = _load_u32_at(address)
        address += 4
        count -= 4
        shift = 32
    if count >= 2:
        word |= _load_u16_at(address) << shift
        address += 2
        count -= 2
        shift += 16
    if count >= 1:
        word |= _load_u8_at(address) << shift
    return word


@inline_kernel
def _write_record(target, source, length, sequence, receive_tsc, receive_ns, kind, flags):
    """Store a whole record at address ``target`` from the ``length`` payload bytes at
    address ``source`` (unchecked: the caller validated both) and return its size.

    The checksum is taken over the values as they are stored, from registers:
    reading the record back would load 8 bytes across two smaller stores, which
    the CPU cannot forward, and each such load would wait for the stores to
    reach the cache. The payload goes 8 bytes at a time, its last word
    carrying the zero padding, so every byte of the record is written once.
    """
    kind_and_flags = (kind & 0xFFFF) | ((flags & 0xFFFFFFFF) << 32)
    _store_u32_at(target + LENGTH_OFFSET, length)
    _store_i64_at(target + SEQUENCE_OFFSET, sequence)
    _store_i64_at(target + TSC_OFFSET, receive_tsc)
    _store_i64_at(target + WALL_OFFSET, receive_ns)
    _store_i64_at(target + KIND_OFFSET, kind_and_flags)
    state = update_half_word(np.uint32(0xFFFFFFFF), length)
    state = update_word(state, sequence)
    state = update_word(state, receive_tsc)
    state = update_word(state, receive_ns)
    state = update_word(state, kind_and_flags)
    words = length >> 3
    body = target + RECORD_HEADER_BYTES
    for word_index in range(words):
        word = _load_i64_at(source + 8 * word_index)
        _store_i64_at(body + 8 * word_index, word)
        state = update_word(state, word)
    size = RECORD_HEADER_BYTES + 8 * words
    if length & 7:
        word = _tail_word(source + 8 * words, length & 7)
        _store_i64_at(target + size, word)
        state = update_word(state, word)
        size += 8
    _store_u32_at(target + CRC_OFFSET, state ^ np.uint32(0xFFFFFFFF))
    return size


@inline_kernel
def _payload_fits(start, stop, available, row_width):
    """Whether ``[start, stop)`` is a payload inside ``available`` bytes (and one row of ``row_width``)."""
    length = stop - start
    return (start >= 0 and length >= 0 and stop <= available and length <= MAX_PAYLOAD
            and (row_width == 0 or length <= row_width))


@inline_kernel
def _padded(length):
    return RECORD_HEADER_BYTES + ((length + ALIGNMENT - 1) & ~(ALIGNMENT - 1))


@kernel
def record_size(length):
    """Bytes a record with a ``length``-byte payload takes: header, payload, padding."""
    return RECORD_HEADER_BYTES + ((length + ALIGNMENT - 1) & ~(ALIGNMENT - 1))


@kernel
def record_checksum(buffer, offset, size):
    """CRC32C of the record of ``size`` bytes at ``offset`` (all of it but its CRC field)."""
    return crc32c(buffer, offset + LENGTH_OFFSET, offset + size, 0)


@kernel
def new_segment_state(first_sequence, file_offset, index_every):
    """A segment state for framing records from ``first_sequence`` at ``file_offset``."""
    segment = np.zeros(SEGMENT_STATE_SIZE, np.int64)
    segment[SEGMENT_NEXT_SEQUENCE] = first_sequence
    segment[SEGMENT_FIRST_SEQUENCE] = first_sequence
    segment[SEGMENT_BASE] = file_offset
    segment[SEGMENT_MAX_NS] = INT64_MIN
    segment[SEGMENT_INDEX_EVERY] = max(index_every, 1)
    segment[SEGMENT_LAST_NS] = INT64_MIN
    segment[SEGMENT_NEXT_ENTRY] = first_sequence
    return segment


@llvm_inline_kernel
def _frame(out, offset, payload, start, stop, receive_tsc, receive_ns, kind, flags, segment, index):
    """:func:`frame`, inlined into the loops that frame many records."""
    length = stop - start
    if length < 0 or start < 0 or stop > payload.size or length > MAX_PAYLOAD or offset < 0 or offset & 7:
        return BAD_ARGUMENT
    size = record_size(length)
    if offset + size > out.size:
        return TOO_LARGE
    sequence = segment[SEGMENT_NEXT_SEQUENCE]
    _write_record(_address(out) + offset, _address(payload) + start, length, sequence, receive_tsc, receive_ns,
                  kind, flags)
    # the sparse index
    if sequence >= segment[SEGMENT_NEXT_ENTRY]:
        segment[SEGMENT_NEXT_ENTRY] = sequence + segment[SEGMENT_INDEX_EVERY]
        count = segment[SEGMENT_INDEX_COUNT]
        if count < index.shape[0]:
            index[count, INDEX_SEQUENCE] = sequence
            index[count, INDEX_OFFSET] = segment[SEGMENT_BASE] + offset
            index[count, INDEX_MAX_NS_BEFORE] = segment[SEGMENT_MAX_NS]
            segment[SEGMENT_INDEX_COUNT] = count + 1
    if receive_ns > segment[SEGMENT_MAX_NS]:
        segment[SEGMENT_MAX_NS] = receive_ns
    segment[SEGMENT_LAST_NS] = receive_ns
    segment[SEGMENT_NEXT_SEQUENCE] = sequence + 1
    segment[SEGMENT_RECORDS] += 1
    return offset + size


@kernel
def frame(out, offset, payload, start, stop, receive_tsc, receive_ns, kind, flags, segment, index):
    """Frame one record into ``out`` at ``offset`` from ``payload[start:stop]``.

    The record gets sequence ``segment[SEGMENT_NEXT_SEQUENCE]``, which then
    advances; an index entry is added to ``index`` when the record is due one
    (silently not when ``index`` is full). Returns the offset after the record,
    or :data:`TOO_LARGE` when it does not fit in ``out`` (nothing changed), or
    :data:`BAD_ARGUMENT` for an impossible range or offset.
    """
    return _frame(out, offset, payload, start, stop, receive_tsc, receive_ns, kind, flags, segment, index)


@inline_kernel
def _step(values, stop):
    """How a per-record array is indexed: 0 when it holds one value for every record,
    1 when it holds one per record (at least ``stop``), -1 when it is too short."""
    if values.shape[0] == 1:
        return 0
    return 1 if values.shape[0] >= stop else -1


@inline_kernel
def _frame_run(out, offset, data, starts, stops, row_width, first, stop_item, receive_tsc, receive_ns, kinds,
               flags, segment, index):
    """Frame records ``first .. stop_item`` whose payloads are ``data[starts[i] + i * row_width:
    stops[i] + i * row_width]`` (see :func:`frame_slices` and :func:`frame_rows`).

    The segment state lives in locals for the whole run and is stored once at
    the end: a store per record to the state array is a store the next record's
    load of it must wait for.
    """
    start_step = _step(starts, stop_item)
    stop_step = _step(stops, stop_item)
    tsc_step = _step(receive_tsc, stop_item)
    ns_step = _step(receive_ns, stop_item)
    kind_step = _step(kinds, stop_item)
    flag_step = _step(flags, stop_item)
    if (min(start_step, stop_step, tsc_step, ns_step, kind_step, flag_step) < 0 or offset < 0 or offset & 7
            or first < 0 or row_width < 0):
        return BAD_ARGUMENT, offset
    sequence = segment[SEGMENT_NEXT_SEQUENCE]
    base = segment[SEGMENT_BASE]
    max_ns = segment[SEGMENT_MAX_NS]
    last_ns = segment[SEGMENT_LAST_NS]
    every = segment[SEGMENT_INDEX_EVERY]
    next_entry = segment[SEGMENT_NEXT_ENTRY]
    entries = segment[SEGMENT_INDEX_COUNT]
    capacity = index.shape[0]
    room = out.size
    available = data.size
    out_address = _address(out)
    data_address = _address(data)
    status = OK
    item = first
    while item < stop_item:
        # unsigned indices: no code for negative indices on each read
        start = (starts[np.uint64(item)] if start_step else starts[0]) + item * row_width
        stop = (stops[np.uint64(item)] if stop_step else stops[0]) + item * row_width
        if not _payload_fits(start, stop, available, row_width):
            status = BAD_ARGUMENT
            break
        length = stop - start
        size = _padded(length)
        if offset + size > room:
            break
        receive = receive_ns[np.uint64(item)] if ns_step else receive_ns[0]
        tsc = receive_tsc[np.uint64(item)] if tsc_step else receive_tsc[0]
        kind = kinds[np.uint64(item)] if kind_step else kinds[0]
        flag = flags[np.uint64(item)] if flag_step else flags[0]
        _write_record(out_address + offset, data_address + start, length, sequence, tsc, receive, kind, flag)
        if sequence >= next_entry:
            next_entry = sequence + every
            if entries < capacity:
                index[entries, INDEX_SEQUENCE] = sequence
                index[entries, INDEX_OFFSET] = base + offset
                index[entries, INDEX_MAX_NS_BEFORE] = max_ns
                entries += 1
        if receive > max_ns:
            max_ns = receive
        last_ns = receive
        sequence += 1
        offset += size
        item += 1
    count = item - first
    segment[SEGMENT_NEXT_SEQUENCE] = sequence
    segment[SEGMENT_MAX_NS] = max_ns
    segment[SEGMENT_LAST_NS] = last_ns
    segment[SEGMENT_NEXT_ENTRY] = next_entry
    segment[SEGMENT_INDEX_COUNT] = entries
    segment[SEGMENT_RECORDS] += count
    if status != OK:
        return status, offset
    return count, offset


@kernel
def frame_slices(out, offset, data, starts, stops, first, receive_tsc, receive_ns, kinds, flags, segment, index):
    """Frame records ``first ..`` whose payloads are ``data[starts[i]:stops[i]]`` (a flat uint8
    array: the lines of a file, say) into ``out`` from ``offset`` until ``out`` is full.

    ``receive_tsc``, ``receive_ns``, ``kinds`` and ``flags`` are int64 arrays
    with one value per record, or one value for every record (length 1).
    Returns ``(records framed or a negative status, offset after them)``; on
    :data:`BAD_ARGUMENT` (a slice outside ``data``, a per-record array too
    short, an offset not 8-aligned) the records before the bad one stay framed.
    """
    return _frame_run(out, offset, data, starts, stops, 0, first, starts.shape[0], receive_tsc, receive_ns, kinds,
                      flags, segment, index)


_ROW_STARTS = np.zeros(1, np.int64)


@kernel
def frame_rows(out, offset, rows, width, lengths, first, stop, receive_tsc, receive_ns, kinds, flags, segment,
               index):
    """Frame records ``first .. stop`` whose payloads are the rows of a table: record ``i`` is
    ``rows[i * width:i * width + lengths[i]]`` (``rows``: the table's flat uint8 bytes).

    As :func:`frame_slices`, without slice arrays to build: ``lengths`` and the
    per-record values are int64 arrays of one value per record or one for
    every record (length 1). A length above ``width`` is :data:`BAD_ARGUMENT`.
    Returns ``(records framed or a negative status, offset after them)``.
    """
    if width <= 0:
        return BAD_ARGUMENT, offset
    return _frame_run(out, offset, rows, _ROW_STARTS, lengths, width, first, stop, receive_tsc, receive_ns, kinds,
                      flags, segment, index)


@kernel
def drain_ring(slab, consumer, out, offset, max_records, tsc_now, wall_ns, ns_per_tick, segment, index):
    """Move up to ``max_records`` messages from a ring consumer into framed records in ``out``.

    A slot's flags carry the record kind in their low 8 bits and the record's
    flags above them; its stamp is the receive TSC, and the receive wall clock
    is ``wall_ns`` less the ticks since the stamp (``tsc_now``, ``wall_ns``:
    one pair read by the caller per batch). Each slot is released once its
    record is framed. Stops early when ``out`` has no room for the next one.

    Returns
    -------
    (int, int)
        Records framed (``>= 0``) or a negative ring status (``CORRUPT_*``),
        and the offset after the last record.
    """
    count = 0
    while count < max_records:
        length, payload, slot_flags, stamp = ring_kernels.peek(slab, consumer)
        if length < 0:
            if length == ring_kernels.EMPTY:
                break
            if count == 0:
                return length, offset
            break
        if offset + record_size(length) > out.size:
            break
        receive_ns = wall_ns
        if stamp != 0 and ns_per_tick > 0.0:
            receive_ns = wall_ns - np.int64(round((tsc_now - stamp) * ns_per_tick))
        offset = _frame(out, offset, payload, 0, length, stamp, receive_ns, slot_flags & 0xFF,
                       slot_flags >> 8, segment, index)
        ring_kernels.release(slab, consumer)
        count += 1
    return count, offset


@kernel
def check_record(buffer, offset, stop, expected_sequence):
    """Check the record at ``offset`` of ``buffer[:stop]``.

    Returns its size in bytes (``> 0``) when its header is sane, its checksum
    right and its sequence ``expected_sequence`` (any when negative);
    otherwise :data:`EMPTY` at ``offset == stop``, :data:`CORRUPT_LENGTH` when
    the record (or its header) runs past ``stop`` or claims an impossible
    length, :data:`CORRUPT_CHECKSUM`, or :data:`CORRUPT_SEQUENCE`.
    """
    if offset >= stop:
        return EMPTY
    if offset + RECORD_HEADER_BYTES > stop:
        return CORRUPT_LENGTH
    length = _u32(buffer, offset + LENGTH_OFFSET)
    if length > MAX_PAYLOAD:
        return CORRUPT_LENGTH
    size = record_size(length)
    if offset + size > stop:
        return CORRUPT_LENGTH
    if np.int64(record_checksum(buffer, offset, size)) != _u32(buffer, offset + CRC_OFFSET):
        return CORRUPT_CHECKSUM
    if expected_sequence >= 0 and _i64(buffer, offset + SEQUENCE_OFFSET) != expected_sequence:
        return CORRUPT_SEQUENCE
    return size


@kernel
def record_header(buffer, offset):
    """``(length, sequence, receive_tsc, receive_ns, kind, flags)`` of the record at ``offset``, unchecked."""
    return (_u32(buffer, offset + LENGTH_OFFSET), _i64(buffer, offset + SEQUENCE_OFFSET),
            _i64(buffer, offset + TSC_OFFSET), _i64(buffer, offset + WALL_OFFSET),
            np.int64(buffer[offset + KIND_OFFSET]) | (np.int64(buffer[offset + KIND_OFFSET + 1]) << 8),
            _u32(buffer, offset + FLAGS_OFFSET))


@kernel
def scan_records(buffer, start, stop, expected_sequence, segment, index, summary):
    """Check records from ``start`` until the end or the first bad one; index them.

    ``segment`` (see :func:`new_segment_state`) receives the index entries
    as :func:`frame` would have made them, ``summary`` the ``SCAN_*`` figures.
    Returns the status that stopped the scan: :data:`EMPTY` at a clean end,
    else the bad record's (see :func:`check_record`).
    """
    offset = start
    records = 0
    data_records = 0
    sequence = expected_sequence
    first_ns = INT64_MIN
    status = EMPTY
    while True:
        size = check_record(buffer, offset, stop, sequence)
        if size < 0:
            status = size
            break
        if sequence < 0:
            sequence = _i64(buffer, offset + SEQUENCE_OFFSET)
        receive_ns = _i64(buffer, offset + WALL_OFFSET)
        if sequence >= segment[SEGMENT_NEXT_ENTRY]:
            segment[SEGMENT_NEXT_ENTRY] = sequence + segment[SEGMENT_INDEX_EVERY]
            count = segment[SEGMENT_INDEX_COUNT]
            if count < index.shape[0]:
                index[count, INDEX_SEQUENCE] = sequence
                index[count, INDEX_OFFSET] = offset
                index[count, INDEX_MAX_NS_BEFORE] = segment[SEGMENT_MAX_NS]
                segment[SEGMENT_INDEX_COUNT] = count + 1
        if receive_ns > segment[SEGMENT_MAX_NS]:
            segment[SEGMENT_MAX_NS] = receive_ns
        if records == 0:
            first_ns = receive_ns
        if buffer[offset + KIND_OFFSET] == RECORD_DATA and buffer[offset + KIND_OFFSET + 1] == 0:
            data_records += 1
        segment[SEGMENT_LAST_NS] = receive_ns
        records += 1
        sequence += 1
        offset += size
    segment[SEGMENT_NEXT_SEQUENCE] = sequence
    segment[SEGMENT_RECORDS] += records
    summary[SCAN_END] = offset
    summary[SCAN_RECORDS] = records
    summary[SCAN_NEXT_SEQUENCE] = sequence
    summary[SCAN_STATUS] = status
    summary[SCAN_MAX_NS] = segment[SEGMENT_MAX_NS]
    summary[SCAN_FIRST_NS] = first_ns
    summary[SCAN_LAST_NS] = segment[SEGMENT_LAST_NS]
    summary[SCAN_DATA_RECORDS] = data_records
    return status


@kernel
def find_next_record(buffer, start, stop, min_sequence):
    """The first 8-aligned offset at or after ``start`` where a record with a right
    checksum and a sequence ``>= min_sequence`` begins, or -1.

    How a reader finds its footing again after a corrupt record: if such a
    record exists, the damage is in the middle; if not, it is a torn tail.
    """
    offset = (start + ALIGNMENT - 1) & ~(ALIGNMENT - 1)
    while offset + RECORD_HEADER_BYTES <= stop:
        size = check_record(buffer, offset, stop, -1)
        if size > 0 and _i64(buffer, offset + SEQUENCE_OFFSET) >= min_sequence:
            return offset
        offset += ALIGNMENT
    return -1


@kernel
def skip_records(buffer, offset, stop, sequence, target_sequence, after_ns, verify):
    """Walk from the record at ``offset`` (whose sequence is ``sequence``) to the first
    record whose sequence is ``>= target_sequence`` and whose receive ns is ``>= after_ns``.

    Returns ``(offset, sequence)`` of that record, or of the end of the good
    records (``offset`` then holds no good record). With ``verify`` each record
    passed is checked; without it only its length is trusted.
    """
    while offset < stop:
        if verify:
            size = check_record(buffer, offset, stop, sequence)
            if size < 0:
                break
        else:
            if offset + RECORD_HEADER_BYTES > stop:
                break
            size = record_size(_u32(buffer, offset + LENGTH_OFFSET))
            if offset + size > stop:
                break
        if sequence >= target_sequence and _i64(buffer, offset + WALL_OFFSET) >= after_ns:
            break
        offset += size
        sequence += 1
    return offset, sequence


@kernel
def read_records(buffer, offset, stop, sequence, max_records, itemsize, out, sequences, receive_ns, kinds):
    """Copy the payloads of up to ``max_records`` checked data records into the rows of ``out``.

    ``out`` is a flat uint8 array of ``max_records * itemsize`` bytes; records
    of other kinds are passed over (their sequences counted). Each copied
    record's sequence and receive ns go into ``sequences`` and ``receive_ns``,
    and ``kinds`` gets the kind of every record passed (only the copied rows
    are meaningful). Returns ``(rows, offset after the last record read,
    next sequence, status)`` where status is :data:`OK` when stopped by
    ``max_records``, :data:`EMPTY` at the end of the good data, else the bad
    record's status (a data record whose length is not ``itemsize``:
    :data:`BAD_ARGUMENT`).
    """
    rows = 0
    status = OK
    while rows < max_records:
        size = check_record(buffer, offset, stop, sequence)
        if size < 0:
            status = size
            break
        kind = np.int64(buffer[offset + KIND_OFFSET]) | (np.int64(buffer[offset + KIND_OFFSET + 1]) << 8)
        if kind == RECORD_DATA:
            length = _u32(buffer, offset + LENGTH_OFFSET)
            if length != itemsize:
                status = BAD_ARGUMENT
                break
            _copy_bytes(buffer, offset + RECORD_HEADER_BYTES, out, rows * itemsize, itemsize)
            sequences[rows] = sequence
            receive_ns[rows] = _i64(buffer, offset + WALL_OFFSET)
            kinds[rows] = kind
            rows += 1
        offset += size
        sequence += 1
    return rows, offset, sequence, status


@kernel
def read_payloads(buffer, offset, stop, sequence, max_records, out, out_offsets, kinds, receive_ns):
    """Copy the payloads of up to ``max_records`` checked records of any kind back to back into ``out``.

    Record ``r`` read lands in ``out[out_offsets[r]:out_offsets[r + 1]]`` (``out_offsets`` has
    ``max_records + 1`` entries, the first set to 0 here), its kind in ``kinds[r]`` and its
    receive ns in ``receive_ns[r]``. Returns ``(records, offset after the last record read, next
    sequence, status)``: :data:`OK` when stopped by ``max_records``, :data:`FULL` when the next
    payload does not fit in ``out`` (that record is left unread), :data:`EMPTY` at the end of the
    good data, else the bad record's status.
    """
    rows = 0
    used = 0
    out_offsets[0] = 0
    status = OK
    while rows < max_records:
        size = check_record(buffer, offset, stop, sequence)
        if size < 0:
            status = size
            break
        length = _u32(buffer, offset + LENGTH_OFFSET)
        if used + length > out.shape[0]:
            status = FULL
            break
        _copy_bytes(buffer, offset + RECORD_HEADER_BYTES, out, used, length)
        used += length
        kinds[rows] = np.int64(buffer[offset + KIND_OFFSET]) | (np.int64(buffer[offset + KIND_OFFSET + 1]) << 8)
        receive_ns[rows] = _i64(buffer, offset + WALL_OFFSET)
        rows += 1
        out_offsets[rows] = used
        offset += size
        sequence += 1
    return rows, offset, sequence, status
