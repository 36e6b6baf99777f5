"""The engine's binary packet: a message as it travels through the ring, the journal and UDP.

Every feed hands the ring the same thing: one packet per exchange message (or
per part of one, when a message holds more events than a packet), so that the
book consumer, the journal and a replay decode one format. UDP carries it
unchanged: ``ringbook send`` writes it, the UDP feed reads it.

Byte layout (version 1, little-endian)
--------------------------------------
========  =====  ==============================================================
offset    type   field
========  =====  ==============================================================
0         u32    magic, the bytes ``b"RBP1"`` (:data:`MAGIC`)
4         u16    event count ``n``: 0 .. :data:`MAX_EVENTS`
6         u16    flags, 0 (reserved)
8         i64    packet sequence: 1, 2, 3, ... per sender, without gaps
16        i64    send time, ns (``CLOCK_REALTIME`` at the sender; 0 when unknown)
24        bytes  ``n`` events of :data:`ringbook.kernels.events.EVENT_DTYPE`, 64 bytes each
========  =====  ==============================================================

A packet is ``24 + 64 * n`` bytes. A receiver counts a sequence above the next
expected one as a gap (``sequence - expected`` packets missing), and one below
it as a reorder (late or duplicate: dropped, never applied twice).
"""

import numpy as np

from ringbook.kernels.events import EVENT_DTYPE, FLAG_BATCH_END
from ringbook.kernels.jit_options import kernel

MAGIC = int.from_bytes(b"RBP1", "little")
VERSION = 1
HEADER_BYTES = 24
EVENT_BYTES = EVENT_DTYPE.itemsize
#: At most this many events a packet: a packet fits a 1 KiB ring slot (24-byte slot header).
MAX_EVENTS = 15
MAX_PACKET_BYTES = HEADER_BYTES + MAX_EVENTS * EVENT_BYTES
#: Ring slot size that holds any packet.
SLOT_SIZE = 1024

HEADER_DTYPE = np.dtype([("magic", "<u4"), ("count", "<u2"), ("flags", "<u2"),
                         ("sequence", "<i8"), ("send_ns", "<i8")])

# decode statuses (negative: the packet is refused)
BAD_LENGTH = -1
BAD_MAGIC = -2
BAD_COUNT = -3


class PacketError(ValueError):
    """Bytes that are not a packet of this format."""


@kernel
def decode_header(payload, length):
    """``(count, sequence, send_ns)`` of the packet in ``payload[:length]``; ``count`` < 0 when refused.

    Every field is read once and checked against ``length`` before use.
    """
    if length < HEADER_BYTES or length > payload.shape[0]:
        return BAD_LENGTH, 0, 0
    magic = np.int64(payload[0]) | (np.int64(payload[1]) << 8) | (np.int64(payload[2]) << 16) \
        | (np.int64(payload[3]) << 24)
    if magic != MAGIC:
        return BAD_MAGIC, 0, 0
    count = np.int64(payload[4]) | (np.int64(payload[5]) << 8)
    if count > MAX_EVENTS or HEADER_BYTES + count * EVENT_BYTES != length:
        return BAD_COUNT, 0, 0
    sequence = np.int64(0)
    send_ns = np.int64(0)
    for i in range(8):
        sequence |= np.int64(payload[8 + i]) << (8 * i)
        send_ns |= np.int64(payload[16 + i]) << (8 * i)
    return count, sequence, send_ns


@kernel
def copy_events(payload, count, event_bytes):
    """Copy the ``count`` events of a decoded packet into ``event_bytes`` (an events array viewed as uint8)."""
    for i in range(count * EVENT_BYTES):
        event_bytes[i] = payload[HEADER_BYTES + i]


@kernel
def write_header(out, offset, count, sequence, send_ns):
    """Write a packet header at ``out[offset:]``."""
    value = np.int64(MAGIC)
    for i in range(4):
        out[offset + i] = (value >> (8 * i)) & 0xFF
    out[offset + 4] = count & 0xFF
    out[offset + 5] = (count >> 8) & 0xFF
    out[offset + 6] = 0
    out[offset + 7] = 0
    for i in range(8):
        out[offset + 8 + i] = (sequence >> (8 * i)) & 0xFF
        out[offset + 16 + i] = (send_ns >> (8 * i)) & 0xFF


def message_bounds(events):
    """``(starts, stops)`` of the exchange messages in ``events``: each ends at a
    ``FLAG_BATCH_END`` event (or at the end of the array)."""
    ends = np.flatnonzero(events["flags"] & FLAG_BATCH_END) + 1
    if len(events) and (len(ends) == 0 or ends[-1] != len(events)):
        ends = np.append(ends, len(events))
    starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
    return starts, ends.astype(np.int64)


def encode(events, first_sequence=1, send_ns=None):
    """Packets for an event array, one per message, long messages split in parts of :data:`MAX_EVENTS`.

    Parameters
    ----------
    events : numpy.ndarray of EVENT_DTYPE
    first_sequence : int
        Sequence of the first packet.
    send_ns : numpy.ndarray, optional
        int64 per event; a packet's send time is its first event's (default 0).

    Returns
    -------
    buffer : numpy.ndarray
        uint8, the packets back to back.
    offsets : numpy.ndarray
        int64, ``len(packets) + 1``: packet ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``.
    first_event : numpy.ndarray
        int64, the index of each packet's first event in ``events``.
    """
    if not isinstance(events, np.ndarray) or events.dtype != EVENT_DTYPE or events.ndim != 1:
        raise TypeError("events must be a 1-d array of EVENT_DTYPE")
    starts, stops = message_bounds(events)
    parts = np.maximum((stops - starts + MAX_EVENTS - 1) // MAX_EVENTS, 1)
    first_event = np.repeat(starts, parts) + MAX_EVENTS * (
        np.arange(parts.sum()) - np.repeat(np.cumsum(parts) - parts, parts))
    last = np.repeat(stops, parts)
    counts = np.minimum(last - first_event, MAX_EVENTS).astype(np.int64)
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(HEADER_BYTES + counts * EVENT_BYTES, out=offsets[1:])
    buffer = np.zeros(int(offsets[-1]), np.uint8)
    event_bytes = np.ascontiguousarray(events).view(np.uint8)
    times = np.zeros(len(events), np.int64) if send_ns is None else np.asarray(send_ns, np.int64)
    _encode(buffer, offsets, first_event.astype(np.int64), counts, event_bytes, times, first_sequence)
    return buffer, offsets, first_event.astype(np.int64)


@kernel
def _encode(buffer, offsets, first_event, counts, event_bytes, times, first_sequence):
    for packet in range(counts.shape[0]):
        offset = offsets[packet]
        send_ns = times[first_event[packet]] if times.shape[0] > 0 else 0
        write_header(buffer, offset, counts[packet], first_sequence + packet, send_ns)
        source = first_event[packet] * EVENT_BYTES
        for i in range(counts[packet] * EVENT_BYTES):
            buffer[offset + HEADER_BYTES + i] = event_bytes[source + i]


def decode(packet):
    """``(sequence, send_ns, events)`` of one packet (bytes-like), for Python callers.

    Raises
    ------
    PacketError
        Naming the field that is wrong.
    """
    payload = np.frombuffer(bytes(packet), np.uint8).copy()
    count, sequence, send_ns = decode_header(payload, len(payload))
    if count == BAD_LENGTH:
        raise PacketError(f"packet of {len(payload)} bytes: shorter than its {HEADER_BYTES}-byte header")
    if count == BAD_MAGIC:
        raise PacketError(f"packet magic is {bytes(payload[:4])!r}, expected b'RBP1'")
    if count == BAD_COUNT:
        raise PacketError(f"packet count field {int(payload[4]) | int(payload[5]) << 8} does not fit "
                          f"its {len(payload)} bytes (at most {MAX_EVENTS} events of {EVENT_BYTES} bytes)")
    events = payload[HEADER_BYTES:].view(EVENT_DTYPE).copy()
    return int(sequence), int(send_ns), events
