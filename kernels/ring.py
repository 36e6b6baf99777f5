"""Ring slots: a single-producer ring of fixed-size messages in one uint8 slab.

One producer writes messages into fixed-size slots; one or more independent
consumers read all of them in order, each at its own position, and the
producer waits for the slowest (the book consumer and the disk flusher read
the same stream this way). The slab may be a private array (threads of one
process), a file mapping or POSIX shared memory (processes): the kernels only
see a C-contiguous 1-D ``uint8`` array.

Byte layout (version 1)
-----------------------
All integers are little-endian (the native order of x86-64 and arm64).
``C`` is the consumer count, ``S`` the slot size, ``N`` the slot count.

Control block, one 64-byte cache line per writer, so that no two sides share
a line (no false sharing):

========  =====  ==============================================================
offset    type   field
========  =====  ==============================================================
0         u64    magic: the bytes ``b"RINGBOOK"`` (:data:`MAGIC`)
8         u32    layout version (:data:`VERSION`, 1)
12        u32    slot size ``S`` in bytes: a power of two, 32 .. 2**24
16        u32    slot count ``N``: a power of two, 2 .. 2**30
20        u32    consumer count ``C``: 1 .. :data:`MAX_CONSUMERS`
24        u32    slot header size in bytes (24)
28        u32    reserved, 0
32        u64    control block size: ``64 * (2 + C)``; the first slot starts here
40        u64    region size: ``64 * (2 + C) + S * N``
48        8 B    data doorbell: consumers park on it waiting for a message
                 (:mod:`ringbook.kernels.futex`); zeros in a new ring
56        8 B    space doorbell: the producer parks on it waiting for a free slot
64        i64    producer position: messages published so far (its own line)
128+64i   i64    consumer ``i``'s position: messages it has read (its own line)
========  =====  ==============================================================

Positions are 64-bit counters that only grow: message ``p`` lives in slot
``p & (N - 1)``, at byte ``64 * (2 + C) + (p & (N - 1)) * S``. Every slot:

========  =====  ==============================================================
0         u32    payload length in bytes, at most ``S - 24``
4         u32    flags, the producer's to define
8         i64    sequence: the message's position ``p``, stored last (-1: never written)
16        i64    stamp: TSC ticks at write (:func:`ringbook.kernels.clock.stamp`), or 0
24        bytes  payload
========  =====  ==============================================================

Ordering: the producer fills a slot's length, flags, stamp and payload, then
stores its sequence with release ordering (the slot is complete), then
publishes its own position with a release store. A consumer knows message
``p`` is complete when it reads (with acquire) either the slot's sequence
equal to ``p`` or a producer position above ``p``; the first costs one cache
line transfer instead of two, which is what one-way latency is made of. A
sequence still at the previous lap's ``p - N`` (or -1) means not yet written:
a consumer waiting on an empty ring polls that one line and reads the
producer's position only once every 64 polls (to catch a corrupt one). A
consumer publishes its own position with a release store once it is done with
the slot, then by default evicts the slot's lines from every cache if the
next message is already written (:func:`set_evict`). Each side keeps the
other's last seen position in its *state* (a small private int64 array, see
:func:`open_producer` and :func:`open_consumer`) and reads the shared line
again only when the ring looks full (producer) or empty (consumer). A new
ring's slots hold sequence -1. A producer killed mid-message leaves a slot
whose sequence is not yet stored: invisible, and every message before it
intact.

Safety: a peer that shares the region may rewrite any of it at any moment,
so every kernel reads each shared number once, validates that copy and uses
only the copy. The geometry a kernel indexes the slab with comes from its
side's private state, validated once against the slab's size when the state
was opened (:func:`check_header`); every slot index is masked. Positions,
lengths and sequences read afterwards are checked before use: nonsense
becomes a ``CORRUPT_*`` status, never an access outside the slab.

The one limit: a kernel cannot tell that the file behind the slab shrank
under it. A peer that truncates a file or ``/dev/shm`` backing makes the
next access to the lost pages fault (``SIGBUS``), in njit code as in any
other. The engine's Python paths check the backing's size before each use
and raise ``RingCorruptError``, but njit code that calls these kernels
directly cannot; the answer is the engine's default backing for rings shared
between processes, a ``memfd`` sealed against shrinking and growing
(:class:`ringbook.engine.ring.Ring`), which no peer can truncate.

Waiting: a side that finds nothing to do spins, then parks on a doorbell
(:mod:`ringbook.kernels.futex`) until the other side rings it: every write
rings the data doorbell and every read the space doorbell, which costs a
load of the header line while nobody sleeps (asymmetric doorbells, which
:class:`ringbook.engine.ring.Ring` sets where Linux offers ``membarrier``;
a fence more otherwise).

Return values: counts, lengths and :data:`OK` are ``>= 0``; statuses are
negative codes of :mod:`ringbook.kernels.status` (re-exported here, see
:data:`STATUSES`; :func:`status_name` names them). :data:`EMPTY`,
:data:`FULL` and :data:`TIMEOUT` are ordinary outcomes; ``CORRUPT_*`` mean
the shared region holds something impossible.
"""

from ringbook.kernels.atomics import load_acquire_at, spin_pause, store_release_at
from ringbook.kernels.clock import monotonic_ns
from ringbook.kernels.jit_options import inline_kernel, llvm_inline_kernel, kernel
from ringbook.kernels.slab import (CACHE_LINE, copy_bytes, evict_lines, load_i64, load_u32, store_i64,
                                   store_u32)
from ringbook.kernels.status import (BAD_ARGUMENT, BAD_STATE, CORRUPT_GEOMETRY, CORRUPT_LENGTH,  # noqa: F401
                                     CORRUPT_MAGIC, CORRUPT_POSITION, CORRUPT_SEQUENCE, CORRUPT_SIZE,
                                     CORRUPT_VERSION, EMPTY, FULL, OK, TIMEOUT, TOO_LARGE, status_name)
from ringbook.kernels.futex import doorbell_cancel, doorbell_park, doorbell_prepare, doorbell_ring
from ringbook.kernels.wait import SPINS

MAGIC = int.from_bytes(b"RINGBOOK", "little")
VERSION = 1
MAX_CONSUMERS = 32
MIN_SLOT_SIZE = 32
MAX_SLOT_SIZE = 1 << 24
MIN_SLOT_COUNT = 2
MAX_SLOT_COUNT = 1 << 30

# Control block: byte offsets.
MAGIC_OFFSET = 0
VERSION_OFFSET = 8
SLOT_SIZE_OFFSET = 12
SLOT_COUNT_OFFSET = 16
CONSUMER_COUNT_OFFSET = 20
SLOT_HEADER_SIZE_OFFSET = 24
CONTROL_BYTES_OFFSET = 32
REGION_BYTES_OFFSET = 40
DATA_BELL_OFFSET = 48
SPACE_BELL_OFFSET = 56
PRODUCER_POSITION_OFFSET = 64
CONSUMER_POSITIONS_OFFSET = 128

# Slot header: byte offsets within a slot.
LENGTH_OFFSET = 0
FLAGS_OFFSET = 4
SEQUENCE_OFFSET = 8
STAMP_OFFSET = 16
SLOT_HEADER_BYTES = 24

#: Every status a ring kernel returns (codes of :mod:`ringbook.kernels.status`).
STATUSES = (OK, EMPTY, FULL, TIMEOUT, TOO_LARGE, BAD_STATE, BAD_ARGUMENT, CORRUPT_MAGIC, CORRUPT_VERSION,
            CORRUPT_GEOMETRY, CORRUPT_SIZE, CORRUPT_POSITION, CORRUPT_LENGTH, CORRUPT_SEQUENCE)
_CORRUPT = (CORRUPT_MAGIC, CORRUPT_VERSION, CORRUPT_GEOMETRY, CORRUPT_SIZE, CORRUPT_POSITION, CORRUPT_LENGTH,
            CORRUPT_SEQUENCE)

# State: a private int64 array per producer or consumer (indices).
ROLE = 0               # PRODUCER or CONSUMER once opened
STATE_SLOT_SIZE = 1
STATE_SLOT_MASK = 2
STATE_SLOTS_OFFSET = 3
STATE_REGION_BYTES = 4
STATE_CONSUMERS = 5
STATE_POSITION = 6     # the next position this side writes or reads
STATE_SEEN = 7         # producer: first position it may not write yet; consumer: producer position seen
STATE_POSITION_OFFSET = 8  # byte offset of this side's shared position
STATE_CONSUMER_INDEX = 9
STATE_CAPACITY = 10     # payload bytes a slot holds
STATE_EMPTY_POLLS = 11  # consumer: polls that found its next slot not yet written
STATE_EVICT = 12        # consumer: 1 to evict a slot's lines once read, when behind (see set_evict)
#: Length of a state array (two cache lines of int64).
STATE_SIZE = 16
PRODUCER = 1
CONSUMER = 2


def is_corrupt(status):
    """Whether ``status`` says the shared region holds something impossible."""
    return status in _CORRUPT


@kernel
def _is_power_of_two(value):
    return value > 0 and (value & (value - 1)) == 0


@kernel
def control_bytes(consumers):
    """Size of the control block: a header line, the producer's line, one line per consumer."""
    return CACHE_LINE * (2 + consumers)


@kernel
def region_bytes(slot_size, slot_count, consumers):
    """Size in bytes of a ring's slab."""
    return control_bytes(consumers) + slot_size * slot_count


@kernel
def check_geometry(slot_size, slot_count, consumers):
    """:data:`OK`, or :data:`BAD_ARGUMENT` when the geometry is out of range."""
    if not (_is_power_of_two(slot_size) and MIN_SLOT_SIZE <= slot_size <= MAX_SLOT_SIZE):
        return BAD_ARGUMENT
    if not (_is_power_of_two(slot_count) and MIN_SLOT_COUNT <= slot_count <= MAX_SLOT_COUNT):
        return BAD_ARGUMENT
    if not 1 <= consumers <= MAX_CONSUMERS:
        return BAD_ARGUMENT
    return OK


@kernel
def format_slab(slab, slot_size, slot_count, consumers):
    """Write an empty ring's control block into ``slab``; return a status.

    The slab's size must be ``region_bytes(slot_size, slot_count, consumers)``.
    The magic is written last, with release ordering, so that whoever sees it
    sees the whole header.
    """
    if check_geometry(slot_size, slot_count, consumers) != OK:
        return BAD_ARGUMENT
    if slab.size != region_bytes(slot_size, slot_count, consumers):
        return BAD_ARGUMENT
    for i in range(control_bytes(consumers)):
        slab[i] = 0
    store_u32(slab, VERSION_OFFSET, VERSION)
    store_u32(slab, SLOT_SIZE_OFFSET, slot_size)
    store_u32(slab, SLOT_COUNT_OFFSET, slot_count)
    store_u32(slab, CONSUMER_COUNT_OFFSET, consumers)
    store_u32(slab, SLOT_HEADER_SIZE_OFFSET, SLOT_HEADER_BYTES)
    store_i64(slab, CONTROL_BYTES_OFFSET, control_bytes(consumers))
    store_i64(slab, REGION_BYTES_OFFSET, slab.size)
    for slot in range(control_bytes(consumers), slab.size, slot_size):
        store_i64(slab, slot + SEQUENCE_OFFSET, -1)  # no message has this position
    store_release_at(slab, MAGIC_OFFSET, MAGIC)
    return OK


@kernel
def check_header(header, region_size):
    """Validate a ring header against the size of its region, reading each field once.

    ``header`` is the region itself or a private copy of its first
    :data:`CACHE_LINE` bytes; ``region_size`` is the region's size in bytes.
    A peer may rewrite the header at any moment: each field is read once, and
    only those copies are checked and returned.

    Returns
    -------
    tuple of int
        ``(status, slot_size, slot_count, consumers)``: :data:`OK` and the
        geometry, or the ``CORRUPT_*`` status of the first bad field (in
        order: room for a header, magic, version, geometry and the sizes it
        implies, the region's size) and zeros.
    """
    if header.size < CACHE_LINE or region_size < control_bytes(1):
        return CORRUPT_SIZE, 0, 0, 0
    magic = load_acquire_at(header, MAGIC_OFFSET)  # stored last: the rest is complete
    version = load_u32(header, VERSION_OFFSET)
    slot_size = load_u32(header, SLOT_SIZE_OFFSET)
    slot_count = load_u32(header, SLOT_COUNT_OFFSET)
    consumers = load_u32(header, CONSUMER_COUNT_OFFSET)
    slot_header_bytes = load_u32(header, SLOT_HEADER_SIZE_OFFSET)
    recorded_control = load_i64(header, CONTROL_BYTES_OFFSET)
    recorded_region = load_i64(header, REGION_BYTES_OFFSET)
    status = OK
    if magic != MAGIC:
        status = CORRUPT_MAGIC
    elif version != VERSION:
        status = CORRUPT_VERSION
    elif (check_geometry(slot_size, slot_count, consumers) != OK or slot_header_bytes != SLOT_HEADER_BYTES
          or recorded_control != control_bytes(consumers)
          or recorded_region != region_bytes(slot_size, slot_count, consumers)):
        status = CORRUPT_GEOMETRY
    elif region_size != recorded_region:
        status = CORRUPT_SIZE
    if status != OK:
        return status, 0, 0, 0
    return OK, slot_size, slot_count, consumers


@kernel
def check_layout(slab):
    """Validate a slab's header: :data:`OK` or the ``CORRUPT_*`` status of the first bad field.

    See :func:`check_header`; the slab's size must be the region size the
    header records.
    """
    return check_header(slab, slab.size)[0]


@kernel
def _open_state(slab, state, role):
    """Validate the header and keep the geometry it held in ``state``: the only copy used afterwards."""
    if state.size < STATE_SIZE:
        return BAD_ARGUMENT
    for i in range(STATE_SIZE):
        state[i] = 0
    status, slot_size, slot_count, consumers = check_header(slab, slab.size)
    if status != OK:
        return status
    state[STATE_SLOT_SIZE] = slot_size
    state[STATE_SLOT_MASK] = slot_count - 1
    state[STATE_SLOTS_OFFSET] = control_bytes(consumers)
    state[STATE_REGION_BYTES] = slab.size
    state[STATE_CONSUMERS] = consumers
    state[STATE_CAPACITY] = slot_size - SLOT_HEADER_BYTES
    state[ROLE] = role
    return OK


@kernel
def _last_use(status, slab, state, buffer):
    """Return ``status``: a hot kernel's single return.

    Numba takes a reference to each array argument on entry and drops it after
    the array's last use; when those drops land in different branches, its
    pruning cannot pair them and every call pays six atomic operations.
    Passing every array here, after the branches join, puts all the
    drops in one block, where they are pruned.
    """
    return status


@inline_kernel
def _is_open(slab, state, role):
    """Whether ``state`` was opened for ``role`` on a slab of this size (the state check of every kernel)."""
    return _last_use(state.size >= STATE_SIZE and state[ROLE] == role and state[STATE_REGION_BYTES] == slab.size,
                     slab, state, state)


@inline_kernel
def _slot_at(state, position):
    """Byte offset of the slot of message ``position``, from the state's validated geometry (masked)."""
    return state[STATE_SLOTS_OFFSET] + (position & state[STATE_SLOT_MASK]) * state[STATE_SLOT_SIZE]


@inline_kernel
def _write_limit(slab, producer, position):
    """Read every consumer's position once: ``(status, first position the producer may not write)``.

    A consumer is never ahead of the producer, nor more than a ring behind:
    anything else is :data:`CORRUPT_POSITION`.
    """
    slot_count = producer[STATE_SLOT_MASK] + 1
    slowest = position
    status = OK
    for i in range(producer[STATE_CONSUMERS]):
        consumer_position = load_acquire_at(slab, CONSUMER_POSITIONS_OFFSET + CACHE_LINE * i)
        if consumer_position < 0 or consumer_position > position or position - consumer_position > slot_count:
            status = CORRUPT_POSITION
        slowest = min(slowest, consumer_position)
    return _last_use(status, slab, producer, producer), slowest + slot_count


@inline_kernel
def _slot_status(length, sequence, capacity, position):
    """OK, or the CORRUPT_* status of a published slot whose header copies are impossible (scalars only)."""
    status = OK
    if length > capacity:
        status = CORRUPT_LENGTH
    elif sequence != position:
        status = CORRUPT_SEQUENCE
    return status


@kernel
def _refresh_limit(slab, producer):
    """Read every consumer's position; set the first position the producer may not write."""
    status, limit = _write_limit(slab, producer, producer[STATE_POSITION])
    if status == OK:
        producer[STATE_SEEN] = limit
    return _last_use(status, slab, producer, producer)


@kernel
def _refresh_available(slab, consumer):
    """Read the producer's position; set how far the consumer may read."""
    position = consumer[STATE_POSITION]
    published = load_acquire_at(slab, PRODUCER_POSITION_OFFSET)
    slot_count = consumer[STATE_SLOT_MASK] + 1
    status = OK
    # The consumer may be ahead of the published position: it takes a slot as
    # soon as its sequence is stored, before the producer publishes its position
    # (a batch publishes once). Never by more than a ring, nor behind by more.
    if published < 0 or published - position > slot_count or position - published > slot_count:
        status = CORRUPT_POSITION
    else:
        consumer[STATE_SEEN] = max(published, position)
    return _last_use(status, slab, consumer, consumer)


@kernel
def open_producer(slab, producer):
    """Open the producer side of the ring in ``slab`` into the int64 array ``producer``.

    Validates the header, copies the geometry into ``producer`` (length at
    least :data:`STATE_SIZE`) and resumes at the published producer position,
    or after it when complete messages follow it (a producer killed before
    publishing them); it must be consistent with every consumer's position.
    Returns a status. There is one producer per ring: nothing here checks
    it, while the engine's ``Ring.producer`` locks the region's file first.
    """
    status = _open_state(slab, producer, PRODUCER)
    if status != OK:
        return status
    position = load_acquire_at(slab, PRODUCER_POSITION_OFFSET)
    if position < 0:
        producer[ROLE] = 0
        return CORRUPT_POSITION
    # A producer that died between storing a slot's sequence and publishing its
    # position left complete messages behind the position: resume after them.
    published = position
    for _ in range(producer[STATE_SLOT_MASK] + 1):
        slot = _slot_at(producer, position)
        if load_i64(slab, slot + SEQUENCE_OFFSET) != position:
            break
        position += 1
    producer[STATE_POSITION] = position
    producer[STATE_POSITION_OFFSET] = PRODUCER_POSITION_OFFSET
    status = _refresh_limit(slab, producer)
    if status == OK and position != published:
        store_release_at(slab, PRODUCER_POSITION_OFFSET, position)
    if status != OK:
        producer[ROLE] = 0
    return status


@kernel
def open_consumer(slab, consumer_index, consumer):
    """Open consumer number ``consumer_index`` of the ring in ``slab`` into ``consumer``.

    Resumes at that consumer's published position. Returns a status.
    """
    status = _open_state(slab, consumer, CONSUMER)
    if status != OK:
        return status
    if not 0 <= consumer_index < consumer[STATE_CONSUMERS]:
        consumer[ROLE] = 0
        return BAD_ARGUMENT
    offset = CONSUMER_POSITIONS_OFFSET + CACHE_LINE * consumer_index
    position = load_acquire_at(slab, offset)
    consumer[STATE_POSITION] = position
    consumer[STATE_POSITION_OFFSET] = offset
    consumer[STATE_CONSUMER_INDEX] = consumer_index
    consumer[STATE_EVICT] = 1
    status = CORRUPT_POSITION if position < 0 else _refresh_available(slab, consumer)
    if status != OK:
        consumer[ROLE] = 0
    return status


@kernel
def _find_message(slab, consumer):
    """The consumer's slow path: :data:`OK` when a message is published, else EMPTY or CORRUPT_POSITION."""
    status = _refresh_available(slab, consumer)
    if status == OK and consumer[STATE_POSITION] >= consumer[STATE_SEEN]:
        status = EMPTY
    return _last_use(status, slab, consumer, consumer)


@llvm_inline_kernel
def try_write(slab, producer, payload, flags=0, stamp=0):
    """Copy ``payload`` (1-D uint8) into the next slot and publish it.

    Compiled into each ``@njit`` caller (:data:`ringbook.kernels.jit_options.llvm_inline_kernel`):
    a call's stack traffic stalled the producer across cores.

    Parameters
    ----------
    slab : uint8[::1]
    producer : int64[::1]
        State from :func:`open_producer`.
    payload : uint8[::1]
    flags : int
        Stored in the slot header (u32).
    stamp : int
        Stored in the slot header, e.g. :func:`ringbook.kernels.clock.stamp` ticks.

    Returns
    -------
    int
        :data:`OK`; :data:`FULL` when the slowest consumer has not freed a
        slot (nothing written: try again later); :data:`TOO_LARGE` when the
        payload exceeds a slot's payload; :data:`CORRUPT_POSITION` or
        :data:`BAD_STATE`.
    """
    status = BAD_STATE
    if _is_open(slab, producer, PRODUCER):
        position = producer[STATE_POSITION]
        length = payload.size
        status = OK
        if length > producer[STATE_CAPACITY]:
            status = TOO_LARGE
        elif position >= producer[STATE_SEEN]:
            status, limit = _write_limit(slab, producer, position)
            if status == OK:
                producer[STATE_SEEN] = limit
                if position >= limit:
                    status = FULL
        if status == OK:
            slot = _slot_at(producer, position)
            store_u32(slab, slot + LENGTH_OFFSET, length)
            store_u32(slab, slot + FLAGS_OFFSET, flags)
            store_i64(slab, slot + STAMP_OFFSET, stamp)
            copy_bytes(payload, 0, slab, slot + SLOT_HEADER_BYTES, length)
            store_release_at(slab, slot + SEQUENCE_OFFSET, position)  # the slot is complete
            producer[STATE_POSITION] = position + 1
            store_release_at(slab, PRODUCER_POSITION_OFFSET, position + 1)
            doorbell_ring(slab, DATA_BELL_OFFSET)
    return _last_use(status, slab, producer, payload)


@kernel
def write_batch(slab, producer, payloads, lengths, flags=0, stamp=0):
    """Write as many messages as there are free slots, then publish once.

    Message ``i`` is ``payloads[i, :lengths[i]]`` (``payloads`` 2-D uint8,
    C-contiguous; ``lengths`` int64). Returns how many were written, from
    the first (0 when the ring is full), or a negative status, with nothing
    written when a length is out of range.
    """
    result = BAD_STATE
    if _is_open(slab, producer, PRODUCER):
        count = payloads.shape[0]
        width = payloads.shape[1]
        result = OK
        if lengths.size < count:
            result = BAD_ARGUMENT
        for i in range(count if result == OK else 0):
            if lengths[i] < 0 or lengths[i] > width:
                result = BAD_ARGUMENT
            elif lengths[i] > producer[STATE_CAPACITY]:
                result = TOO_LARGE
        position = producer[STATE_POSITION]
        if result == OK and position + count > producer[STATE_SEEN]:
            result, limit = _write_limit(slab, producer, position)
            if result == OK:
                producer[STATE_SEEN] = limit
        if result == OK:
            result = min(count, producer[STATE_SEEN] - position)
            for i in range(result):
                slot = _slot_at(producer, position + i)
                store_u32(slab, slot + LENGTH_OFFSET, lengths[i])
                store_u32(slab, slot + FLAGS_OFFSET, flags)
                store_i64(slab, slot + STAMP_OFFSET, stamp)
                copy_bytes(payloads, i * width, slab, slot + SLOT_HEADER_BYTES, lengths[i])
                store_release_at(slab, slot + SEQUENCE_OFFSET, position + i)
            if result > 0:
                producer[STATE_POSITION] = position + result
                store_release_at(slab, PRODUCER_POSITION_OFFSET, position + result)
                doorbell_ring(slab, DATA_BELL_OFFSET)
    return _last_use(_last_use(result, slab, producer, payloads), lengths, lengths, lengths)


#: A consumer that keeps finding its next slot not yet written looks at the
#: producer's position once every this many polls (a power of two).
POSITION_CHECK_POLLS = 64


@inline_kernel
def _poll_slot(slab, consumer, slot, position):
    """Whether message ``position`` is in ``slot``: :data:`OK`, :data:`EMPTY` or ``CORRUPT_*``.

    The slot's own sequence answers without the producer's line: equal to
    ``position``, the message is complete; still the previous lap's (or -1
    on a new ring), it is not written yet. So a consumer waiting on an empty
    ring touches only the line the producer writes next, as a bare ping-pong
    does. The producer's position is read when the sequence is anything
    else, and once every :data:`POSITION_CHECK_POLLS` empty polls, so that a
    corrupt position is still reported.
    """
    sequence = load_acquire_at(slab, slot + SEQUENCE_OFFSET)
    status = OK
    if sequence == position:
        consumer[STATE_SEEN] = position + 1
    else:
        consumer[STATE_EMPTY_POLLS] += 1
        not_written = (sequence == position - consumer[STATE_SLOT_MASK] - 1
                       or (sequence == -1 and position <= consumer[STATE_SLOT_MASK]))
        if not_written and consumer[STATE_EMPTY_POLLS] & (POSITION_CHECK_POLLS - 1) != 0:
            status = EMPTY
        else:
            status = _find_message(slab, consumer)
    return _last_use(status, slab, consumer, consumer)


@inline_kernel
def _evicted_bytes(evict, length, next_written):
    """Bytes to evict after reading a slot whose payload is ``length`` bytes:
    its header and payload when the consumer evicts and the next message was
    already written (the consumer is behind), else none (see :func:`set_evict`).
    Scalars only: inlining it copies no array reference into the hot kernels."""
    return (SLOT_HEADER_BYTES + length) * (evict != 0 and next_written)


@kernel
def set_evict(consumer, enabled):
    """Whether this consumer evicts a slot's cache lines from every cache once
    it has read it and the next message is already written (on when opened).
    Returns :data:`OK` or :data:`BAD_STATE`.

    A consumer that is behind evicts: otherwise the line stays in its cache
    for a lap, and the producer's next write to it must first take it back
    from that core, a cross-core round trip per message. A consumer that has
    caught up keeps the line: a lap later it waits on that slot again, and a
    line in its own cache is the fastest to wait on (one fetched from memory
    races the producer's write).

    It pays only while a lap of slots fits in the consumer's L2 cache, and
    with one consumer (one's eviction sends the others to memory): the
    engine's ``Ring.consumer`` turns it off otherwise
    (:func:`ringbook.engine.ring.evicts_by_default`). Turn it off too when one
    thread writes and reads: its batches gain nothing from it and lose the
    flushes' cost. ``perf/bm_ring.py`` measures each case.
    """
    if consumer.size < STATE_SIZE or consumer[ROLE] != CONSUMER:
        return BAD_STATE
    consumer[STATE_EVICT] = 1 if enabled else 0
    return OK


@kernel
def try_read(slab, consumer, out):
    """Copy the next message into ``out`` (1-D uint8) and free its slot.

    Returns
    -------
    int
        The message's length (``>= 0``); :data:`EMPTY`; :data:`TOO_LARGE` when
        ``out`` is shorter than the message (not consumed); ``CORRUPT_*`` or
        :data:`BAD_STATE`.
    """
    result = BAD_STATE
    if _is_open(slab, consumer, CONSUMER):
        position = consumer[STATE_POSITION]
        slot = _slot_at(consumer, position)
        result = OK
        if position >= consumer[STATE_SEEN]:
            result = _poll_slot(slab, consumer, slot, position)
        if result == OK:
            length = load_u32(slab, slot + LENGTH_OFFSET)
            sequence = load_i64(slab, slot + SEQUENCE_OFFSET)
            if length > consumer[STATE_CAPACITY] or sequence != position:
                result = _slot_status(length, sequence, consumer[STATE_CAPACITY], position)
            elif length > out.size:
                result = TOO_LARGE
            else:
                copy_bytes(slab, slot + SLOT_HEADER_BYTES, out, 0, length)
                consumer[STATE_POSITION] = position + 1
                store_release_at(slab, consumer[STATE_POSITION_OFFSET], position + 1)
                doorbell_ring(slab, SPACE_BELL_OFFSET)
                following = _slot_at(consumer, position + 1)
                next_written = load_i64(slab, following + SEQUENCE_OFFSET) == position + 1
                evict_lines(slab, slot, _evicted_bytes(consumer[STATE_EVICT], length, next_written))
                result = length
    return _last_use(result, slab, consumer, out)


@kernel
def read_batch(slab, consumer, payloads, lengths):
    """Read up to ``payloads.shape[0]`` messages into the rows of ``payloads``; publish once.

    ``lengths[i]`` receives message ``i``'s length. Returns how many were read
    (0 when empty). A message that does not fit a row, or a corrupt slot,
    stops the batch: the messages before it are returned, and the next call
    returns the status (:data:`TOO_LARGE`, ``CORRUPT_*``).
    """
    result = BAD_STATE
    if _is_open(slab, consumer, CONSUMER):
        count = payloads.shape[0]
        width = payloads.shape[1]
        position = consumer[STATE_POSITION]
        result = OK
        if lengths.size < count:
            result = BAD_ARGUMENT
        elif position + count > consumer[STATE_SEEN]:
            result = _refresh_available(slab, consumer)
        if result == OK:
            available = min(count, consumer[STATE_SEEN] - position)
            read = 0
            while read < available:
                slot = _slot_at(consumer, position + read)
                length = load_u32(slab, slot + LENGTH_OFFSET)
                sequence = load_i64(slab, slot + SEQUENCE_OFFSET)
                if length > consumer[STATE_CAPACITY] or sequence != position + read:
                    result = _slot_status(length, sequence, consumer[STATE_CAPACITY], position + read)
                    break
                if length > width:
                    result = TOO_LARGE
                    break
                copy_bytes(slab, slot + SLOT_HEADER_BYTES, payloads, read * width, length)
                lengths[read] = length
                read += 1
            if read > 0:
                consumer[STATE_POSITION] = position + read
                store_release_at(slab, consumer[STATE_POSITION_OFFSET], position + read)
                doorbell_ring(slab, SPACE_BELL_OFFSET)
                if consumer[STATE_EVICT] != 0:
                    # Every slot read but the last has its next message written (see set_evict).
                    following = _slot_at(consumer, position + read)
                    last_evicted = load_i64(slab, following + SEQUENCE_OFFSET) == position + read
                    for i in range(read - 1 + last_evicted):
                        slot = _slot_at(consumer, position + i)
                        evict_lines(slab, slot, SLOT_HEADER_BYTES + min(lengths[i], consumer[STATE_CAPACITY]))
                result = read
    return _last_use(_last_use(result, slab, consumer, payloads), lengths, lengths, lengths)


@inline_kernel
def _peek_slot(slab, consumer):
    """``(length or status, payload offset, flags, stamp)`` of the next message."""
    result = BAD_STATE
    start = 0
    flags = 0
    stamp = 0
    if _is_open(slab, consumer, CONSUMER):
        position = consumer[STATE_POSITION]
        slot = _slot_at(consumer, position)
        result = OK
        if position >= consumer[STATE_SEEN]:
            result = _poll_slot(slab, consumer, slot, position)
        if result == OK:
            # Each field read once: the length checked is the length returned.
            length = load_u32(slab, slot + LENGTH_OFFSET)
            result = _slot_status(length, load_i64(slab, slot + SEQUENCE_OFFSET), consumer[STATE_CAPACITY],
                                  position)
            if result == OK:
                result = length
                start = slot + SLOT_HEADER_BYTES
                flags = load_u32(slab, slot + FLAGS_OFFSET)
                stamp = load_i64(slab, slot + STAMP_OFFSET)
    return (_last_use(result, slab, consumer, consumer), start, flags, stamp)


@kernel
def peek(slab, consumer):
    """The next message without consuming it: ``(length, payload, flags, stamp)``.

    ``payload`` is a zero-copy view into the slab, valid until
    :func:`release`. When there is no message, ``length`` is a negative status
    (:data:`EMPTY`, ``CORRUPT_*``) and ``payload`` is empty.
    """
    result, start, flags, stamp = _peek_slot(slab, consumer)
    return result, slab[start:start + max(result, 0)], flags, stamp


@kernel
def peek_header(slab, consumer):
    """:func:`peek` without the payload: ``(length, flags, stamp)``, not consuming.

    The cheapest way to wait for a message: a view holds a reference to the
    slab, and taking and dropping it costs two atomic operations a call,
    which a loop polling for a message pays each time. Read the payload
    afterwards with :func:`peek`, or skip it and :func:`release`.
    """
    result, start, flags, stamp = _peek_slot(slab, consumer)
    return result, flags, stamp


@kernel
def release(slab, consumer):
    """Consume the message :func:`peek` returned, freeing its slot: :data:`OK` or :data:`EMPTY`."""
    result = BAD_STATE
    if _is_open(slab, consumer, CONSUMER):
        position = consumer[STATE_POSITION]
        result = EMPTY
        if position < consumer[STATE_SEEN]:
            consumer[STATE_POSITION] = position + 1
            store_release_at(slab, consumer[STATE_POSITION_OFFSET], position + 1)
            doorbell_ring(slab, SPACE_BELL_OFFSET)
            # The length is read again and may have changed: clamped to a slot.
            slot = _slot_at(consumer, position)
            length = min(load_u32(slab, slot + LENGTH_OFFSET), consumer[STATE_CAPACITY])
            following = _slot_at(consumer, position + 1)
            next_written = load_i64(slab, following + SEQUENCE_OFFSET) == position + 1
            evict_lines(slab, slot, _evicted_bytes(consumer[STATE_EVICT], length, next_written))
            result = OK
    return _last_use(result, slab, consumer, consumer)


@kernel
def write_wait(slab, producer, payload, flags, stamp, strategy, timeout_ns):
    """:func:`try_write`, waiting while the ring is full: ``strategy[SPINS]`` pause rounds
    (see :mod:`ringbook.kernels.wait`), then parked on the space doorbell until a consumer reads.

    ``timeout_ns < 0`` waits for ever. Returns :func:`try_write`'s status, or
    :data:`TIMEOUT`.
    """
    deadline = monotonic_ns() + timeout_ns if timeout_ns >= 0 else 0
    attempt = 0
    while True:
        status = try_write(slab, producer, payload, flags, stamp)
        if status != FULL:
            return status
        if attempt < strategy[SPINS]:
            attempt += 1
            spin_pause()
            continue
        ticket = doorbell_prepare(slab, SPACE_BELL_OFFSET)
        status = try_write(slab, producer, payload, flags, stamp)
        if status != FULL:
            doorbell_cancel(slab, SPACE_BELL_OFFSET)
            return status
        if doorbell_park(slab, SPACE_BELL_OFFSET, ticket, deadline, timeout_ns) == TIMEOUT:
            return TIMEOUT


@kernel
def wait_readable(slab, consumer, spins, deadline, timeout_ns):
    """Wait until ``consumer`` has a message to read, without reading it: ``spins`` pause
    rounds, then parked on the data doorbell until the producer writes.

    ``deadline`` is a :func:`~ringbook.kernels.clock.monotonic_ns` time, used only when
    ``timeout_ns >= 0`` (negative: no limit). Returns :data:`OK`, :data:`TIMEOUT`, or the
    negative status :func:`peek_header` found. Wakes early when the doorbell is rung for
    another reason (:func:`ringbook.kernels.futex.doorbell_wake`): check what you wait for again.
    """
    for _ in range(spins):
        length, _, _ = peek_header(slab, consumer)
        if length != EMPTY:
            return OK if length >= 0 else length
        spin_pause()
    ticket = doorbell_prepare(slab, DATA_BELL_OFFSET)
    length, _, _ = peek_header(slab, consumer)
    if length != EMPTY:
        doorbell_cancel(slab, DATA_BELL_OFFSET)
        return OK if length >= 0 else length
    return doorbell_park(slab, DATA_BELL_OFFSET, ticket, deadline, timeout_ns)


@kernel
def read_wait(slab, consumer, out, strategy, timeout_ns):
    """:func:`try_read`, waiting while the ring is empty: ``strategy[SPINS]`` pause rounds,
    then parked on the data doorbell until the producer writes (:func:`wait_readable`).

    ``timeout_ns < 0`` waits for ever. Returns :func:`try_read`'s result, or
    :data:`TIMEOUT`.
    """
    deadline = monotonic_ns() + timeout_ns if timeout_ns >= 0 else 0
    spins = strategy[SPINS]
    while True:
        result = try_read(slab, consumer, out)
        if result != EMPTY:
            return result
        status = wait_readable(slab, consumer, spins, deadline, timeout_ns)
        if status < 0:
            return status  # TIMEOUT, or what the wait found wrong with the ring
        spins = 0  # spun once already: a spurious wake parks again at once


@kernel
def pending(slab, consumer):
    """How many messages ``consumer`` has yet to read, or a negative status."""
    if not _is_open(slab, consumer, CONSUMER):
        return BAD_STATE
    status = _refresh_available(slab, consumer)
    if status != OK:
        return status
    return consumer[STATE_SEEN] - consumer[STATE_POSITION]


@kernel
def free_slots(slab, producer):
    """How many messages the producer can write now, or a negative status."""
    if not _is_open(slab, producer, PRODUCER):
        return BAD_STATE
    status = _refresh_limit(slab, producer)
    if status != OK:
        return status
    return producer[STATE_SEEN] - producer[STATE_POSITION]


@kernel
def is_empty(slab, consumer):
    """Whether ``consumer`` has nothing to read (False on a bad status: read to see it)."""
    return pending(slab, consumer) == 0


@kernel
def is_full(slab, producer):
    """Whether the producer has no free slot (False on a bad status: write to see it)."""
    return free_slots(slab, producer) == 0


@kernel
def producer_position(slab):
    """The published producer position (messages written), or :data:`CORRUPT_SIZE` for a tiny slab."""
    if slab.size < control_bytes(1):
        return CORRUPT_SIZE
    return load_acquire_at(slab, PRODUCER_POSITION_OFFSET)


@kernel
def consumer_position(slab, consumer_index):
    """Consumer ``consumer_index``'s published position, or :data:`BAD_ARGUMENT`."""
    offset = CONSUMER_POSITIONS_OFFSET + CACHE_LINE * consumer_index
    if consumer_index < 0 or offset + CACHE_LINE > slab.size:
        return BAD_ARGUMENT
    return load_acquire_at(slab, offset)
