"""A connection between two processes: two rings and a doorbell in one region, and the njit
loops on each side of it (a server's I/O worker, a client's request and a load generator).

Region layout (version 2), little-endian; the engine (:mod:`ringbook.engine.ipc`)
makes it in a sealed memfd that no peer can shrink or grow:

========  =====  ==============================================================
offset    type   field
========  =====  ==============================================================
0         u64    magic ``b"RBCONNEC"`` (:data:`MAGIC`)
8         u32    layout version (:data:`VERSION`)
12        u32    state: :data:`OPEN`, :data:`CLIENT_CLOSED`, :data:`SERVER_CLOSED`
16        i64    request ring offset (client -> server)
24        i64    request ring bytes
32        i64    response ring offset (server -> client)
40        i64    response ring bytes
48        i64    why the server closed it (:data:`CLOSED_STALLED`, ...)
64        8 B    server doorbell: only its waiters word is used (the worker announces there
                 before it parks on its group's doorbell)
72        8 B    reserved (zero)
128       ...    request ring, then response ring (each a ring of :mod:`ringbook.kernels.ring`)
========  =====  ==============================================================

A server's I/O worker serves a *group* of connections and parks on one futex
word, the group doorbell, in a page it shares with its group's clients. Before
it parks it announces in every connection's server doorbell (a region only
that client shares); a client, after writing a request, reads its own server
doorbell and, if the worker announced, rings the group doorbell. So a client
can neither hide another client's requests from the worker nor see its rings;
the worst a hostile one can do to the shared page is wake the worker for
nothing.

The other way round, a client process parks on one doorbell for all its
connections to a server: the *client page*, which the server makes for each
client process (by its ``SO_PEERCRED`` pid) and shares with that process
only. Its doorbell (at :data:`CLIENT_PAGE_BELL`) is an ordinary
:mod:`ringbook.kernels.futex` doorbell: the client announces there, checks
its response rings, and sleeps; a worker that wrote responses to any of that
process's connections rings it. A process driving many connections thus
never oversleeps while one of them has a reply, and a waiter killed with its
announce in place leaves it only in a page that goes away with the process's
last connection. Threads of one process share the page: a response for one
may wake the others for nothing (they check and sleep again).

Wakes are made once per pass, not per connection: a worker marks the client
page of each connection it answered and rings each marked page once after
the pass (:func:`_ring_pages`), and the load generator notifies each worker
group once after its pass. The rings' own doorbells are left in asymmetric
mode, unused: nobody parks on them, so a write or a read checks them with a
load and no fence.

The server never trusts the region after it handed it over: the ring
geometry comes from the states it opened before the client had the region,
and every number read from the rings afterwards is checked (``CORRUPT_*``).
"""

import numpy as np

from ringbook.kernels import futex, ring
from ringbook.kernels.atomics import load_acquire, spin_pause
from ringbook.kernels.clock import monotonic_ns
from ringbook.kernels.hist import record
from ringbook.kernels.jit_options import kernel, kernel_with_callback
from ringbook.kernels.status import OK, TIMEOUT

MAGIC = int.from_bytes(b"RBCONNEC", "little")
VERSION = 2
MAGIC_OFFSET = 0
VERSION_OFFSET = 8
STATE_OFFSET = 12
REQUEST_OFFSET = 16
REQUEST_BYTES_OFFSET = 24
RESPONSE_OFFSET = 32
RESPONSE_BYTES_OFFSET = 40
CLOSE_REASON_OFFSET = 48
SERVER_BELL = 64
#: Bytes before the request ring.
HEADER_BYTES = 128
#: The group doorbell's offset in its page.
GROUP_BELL = 0
#: The client doorbell's offset in its client page.
CLIENT_PAGE_BELL = 0

# Connection states (u32 at STATE_OFFSET).
OPEN = 0
CLIENT_CLOSED = 1
SERVER_CLOSED = 2

# Why the server closed a connection (the worker's table and the region's close reason).
CLOSED_NOT = 0
CLOSED_CLIENT_GONE = 1     # the client's socket ended (it exited or was killed)
CLOSED_STALLED = 2         # its response ring stayed full longer than the stall limit
CLOSED_CORRUPT = 3         # a ring returned a CORRUPT_* status, or a request too large
CLOSED_CLIENT_CLOSED = 4   # the client said it closed
CLOSED_SERVER_STOPPED = 5
CLOSE_REASONS = {CLOSED_CLIENT_GONE: "client gone", CLOSED_STALLED: "stalled", CLOSED_CORRUPT: "corrupt",
                 CLOSED_CLIENT_CLOSED: "client closed", CLOSED_SERVER_STOPPED: "server stopped"}

#: A client-side wait that found the connection closed.
CLOSED = -60

# A worker's table: one int64 row per connection.
ACTIVE = 0          # 1 while served
REASON = 1          # CLOSED_* once the worker closed it
DETAIL = 2          # the ring status that closed it
MESSAGES = 3        # requests served
STALL_SINCE = 4     # monotonic ns since the response ring was found full, or 0
WAKES = 5           # rings of its client page that found the client parked (a FUTEX_WAKE each)
PAGE_ROW = 6        # the row that stands for its client page (the first sharing it; set by the engine)
RING_PASS = 7       # as a PAGE_ROW: the pass in which its page has responses to ring for
TABLE_COLUMNS = 8

# A worker's control array (int64).
STOP = 0            # 1: return at once
GENERATION = 1      # bumped by the engine when the group's membership changes
SEEN_GENERATION = 2
PARKS = 3           # times the worker parked
WAKES_FOR_NOTHING = 4
PASSES = 5          # passes over the group so far
CONTROL_WORDS = 8

# What serve returns.
SERVE_SLICE = 0     # the time slice ended
SERVE_STOP = 1
SERVE_CHANGED = 2   # membership changed, or the worker closed a connection

#: Requests a worker reads from one connection before it looks at the next.
BATCH = 32
#: Longest a worker parks while a connection stalls (to come back and check the stall's age);
#: otherwise it parks until rung or its time slice ends.
PARK_NS = 50_000_000
#: What one of ``spins`` rounds is worth where a side spins over many connections: it spins
#: for ``spins * SPIN_ROUND_NS`` since the last pass that moved something, in passes, then
#: parks (a pass over hundreds of connections is far longer than a pause).
SPIN_ROUND_NS = 50


@kernel
def echo(request, length, response):
    """The echo handler: the response is the request. A handler takes the request buffer,
    its length and a response buffer, and returns the response's length (negative: none)."""
    for i in range(length):
        response[i] = request[i]
    return length


@kernel
def _close(table, controls, bells, i, reason, detail):
    table[i, ACTIVE] = 0
    table[i, REASON] = reason
    table[i, DETAIL] = detail
    control = controls[i]
    control[CLOSE_REASON_OFFSET:CLOSE_REASON_OFFSET + 8].view(np.int64)[0] = reason
    control[STATE_OFFSET:STATE_OFFSET + 4].view(np.uint32)[0] = SERVER_CLOSED
    futex.doorbell_wake(bells[i], CLIENT_PAGE_BELL)  # a client parked for a response learns now


@kernel_with_callback
def _serve_connection(requests, responses, controls, bells, states, table, i, handler, inbox, outbox, stall_ns,
                      now, pass_number):
    """Serve up to :data:`BATCH` requests of connection ``i``; how many (-1: it was closed). Its client
    page is marked to be rung at the end of the pass (once for all its connections)."""
    request_slab = requests[i]
    response_slab = responses[i]
    reader = states[i, :ring.STATE_SIZE]
    writer = states[i, ring.STATE_SIZE:]
    served = 0
    while served < BATCH:
        if writer[ring.STATE_POSITION] >= writer[ring.STATE_SEEN]:
            free = ring.free_slots(response_slab, writer)
            if free < 0:
                _close(table, controls, bells, i, CLOSED_CORRUPT, free)
                return -1
            if free == 0:  # the client does not read its responses: stall it alone
                if table[i, STALL_SINCE] == 0:
                    table[i, STALL_SINCE] = now
                elif now - table[i, STALL_SINCE] > stall_ns:
                    _close(table, controls, bells, i, CLOSED_STALLED, ring.FULL)
                    return -1
                break
        table[i, STALL_SINCE] = 0
        length = ring.try_read(request_slab, reader, inbox)
        if length == ring.EMPTY:
            break
        if length < 0:
            _close(table, controls, bells, i, CLOSED_CORRUPT, length)
            return -1
        answer = handler(inbox, length, outbox)
        if answer >= 0:
            status = ring.try_write(response_slab, writer, outbox[:answer], 0, 0)
            if status != ring.OK:
                _close(table, controls, bells, i, CLOSED_CORRUPT, status)
                return -1
        served += 1
    if served > 0:
        table[i, MESSAGES] += served
        table[table[i, PAGE_ROW], RING_PASS] = pass_number
    return served


@kernel
def _ring_pages(bells, table, pass_number):
    """Ring each client page that got responses in this pass and whose process parks: one
    ``FUTEX_WAKE`` per process, however many of its connections were answered."""
    for i in range(table.shape[0]):
        if table[i, RING_PASS] == pass_number:
            if futex.doorbell_waiters(bells[i], CLIENT_PAGE_BELL) != 0:
                futex.doorbell_wake(bells[i], CLIENT_PAGE_BELL)
                table[i, WAKES] += 1


@kernel_with_callback
def serve(requests, responses, controls, bells, states, table, group, control, handler, inbox, outbox,
          stall_ns, slice_ns, spins):
    """An I/O worker's loop over its group of connections, for about ``slice_ns``.

    Serves every active connection in turn, then rings the client pages that
    got responses (:func:`_ring_pages`); when a whole pass finds nothing,
    spins for ``spins`` rounds' time (:data:`SPIN_ROUND_NS`), then announces
    in every connection's server doorbell, looks once more and parks on the
    group doorbell. Returns
    :data:`SERVE_SLICE`, :data:`SERVE_STOP` or :data:`SERVE_CHANGED` (the
    engine then updates the group and calls again).
    """
    deadline = monotonic_ns() + slice_ns
    spin_ns = spins * SPIN_ROUND_NS
    idle_since = -1  # when the passes started to find nothing; -1: they move things
    while True:
        if load_acquire(control, STOP) != 0:
            return SERVE_STOP
        if load_acquire(control, GENERATION) != control[SEEN_GENERATION]:
            return SERVE_CHANGED
        now = monotonic_ns()
        served = 0
        closed = False
        control[PASSES] += 1
        pass_number = control[PASSES]
        for i in range(table.shape[0]):
            if table[i, ACTIVE] == 1:
                count = _serve_connection(requests, responses, controls, bells, states, table, i, handler,
                                          inbox, outbox, stall_ns, now, pass_number)
                if count < 0:
                    closed = True
                else:
                    served += count
        if served > 0:
            _ring_pages(bells, table, pass_number)
        if closed:
            return SERVE_CHANGED
        if served > 0:
            idle_since = -1
            continue
        if now >= deadline:
            return SERVE_SLICE
        if idle_since < 0:
            idle_since = now
        if now - idle_since < spin_ns:
            spin_pause()
            continue
        # After a park that timed out, one quiet pass is enough before the next: spinning over
        # every connection again is what an idle server would spend its CPU on.
        timed_out = _park(requests, controls, states, table, group, control, deadline - now)
        idle_since = monotonic_ns() - spin_ns if timed_out == TIMEOUT else -1


@kernel
def _park(requests, controls, states, table, group, control, timeout_ns):
    """Announce in every active connection, look again, and sleep on the group doorbell for
    ``timeout_ns`` (:data:`PARK_NS` at most while a connection stalls): :data:`TIMEOUT` when
    the sleep ran out, else :data:`OK`."""
    asymmetric = False
    for i in range(table.shape[0]):
        if table[i, ACTIVE] == 1:
            word = futex.fetch_add_u32_at(controls[i], SERVER_BELL + futex.WAITERS_OFFSET, 1)
            asymmetric = asymmetric or word & futex.ASYMMETRIC != 0
    if asymmetric:
        futex.membarrier(futex.MEMBARRIER_CMD_GLOBAL_EXPEDITED)
    ticket = futex.load_u32_at(group, GROUP_BELL + futex.SEQUENCE_OFFSET)
    work = load_acquire(control, STOP) != 0 or load_acquire(control, GENERATION) != control[SEEN_GENERATION]
    for i in range(table.shape[0]):
        # A stalled connection's requests wait for room it does not give: no reason to stay up
        # (the park's time limit brings the worker back to check the stall's age).
        if table[i, ACTIVE] == 1 and table[i, STALL_SINCE] != 0:
            timeout_ns = min(timeout_ns, PARK_NS)
        elif not work and table[i, ACTIVE] == 1:
            work = ring.pending(requests[i], states[i, :ring.STATE_SIZE]) != 0
    status = OK
    if not work:
        control[PARKS] += 1
        status = futex.futex_wait(group, GROUP_BELL + futex.SEQUENCE_OFFSET, ticket, timeout_ns)
    for i in range(table.shape[0]):
        if table[i, ACTIVE] == 1:
            futex.fetch_add_u32_at(controls[i], SERVER_BELL + futex.WAITERS_OFFSET, -1)
    return status


# The client's side.

@kernel
def connection_state(control):
    """:data:`OPEN`, :data:`CLIENT_CLOSED` or :data:`SERVER_CLOSED`."""
    return futex.load_u32_at(control, STATE_OFFSET)


@kernel
def notify_server(control, group):
    """After writing requests: wake the worker if it announced it parks (costs a load otherwise)."""
    if futex.doorbell_waiters(control, SERVER_BELL) != 0:
        futex.doorbell_wake(group, GROUP_BELL)


@kernel
def send(request_slab, producer, payload, control, group):
    """Write one request and wake the worker if it parks: :data:`OK`, ring.FULL or another status."""
    status = ring.try_write(request_slab, producer, payload, 0, 0)
    if status == ring.OK:
        notify_server(control, group)
    return status


@kernel
def receive_wait(response_slab, consumer, out, control, bell, spins, timeout_ns):
    """The next response into ``out``: its length, :data:`TIMEOUT`, :data:`CLOSED` or a ring status.

    Spins ``spins`` rounds, then parks on the doorbell of ``bell``, the client
    page; ``timeout_ns`` negative waits for ever.
    """
    deadline = monotonic_ns() + timeout_ns if timeout_ns >= 0 else 0
    attempt = 0
    while True:
        length = ring.try_read(response_slab, consumer, out)
        if length != ring.EMPTY:
            return length
        if connection_state(control) != OPEN:
            return CLOSED
        if attempt < spins:
            attempt += 1
            spin_pause()
            continue
        ticket = futex.doorbell_prepare(bell, CLIENT_PAGE_BELL)
        if ring.pending(response_slab, consumer) != 0 or connection_state(control) != OPEN:
            futex.doorbell_cancel(bell, CLIENT_PAGE_BELL)
            continue
        if futex.doorbell_park(bell, CLIENT_PAGE_BELL, ticket, deadline, timeout_ns) == TIMEOUT:
            return TIMEOUT


@kernel
def _failed(result, failed, i):
    """Count an error and give up connection ``i``; 1 (it is finished)."""
    result[1] += 1
    failed[i] = True
    return 1


@kernel
def drive_echo(requests, responses, controls, groups, group_of, bell, states, messages, window, payload, out,
               rtt_counts, rtt_meta, spins, timeout_ns, result):
    """A load generator: every connection sends ``messages`` requests, at most ``window`` in flight,
    and checks each echo (spinning for ``spins`` rounds' time, :data:`SPIN_ROUND_NS`, before it
    parks). Round trips (ns, from the monotonic stamp in the payload's first 8 bytes)
    go into a histogram (``rtt_counts``/``rtt_meta``, :mod:`ringbook.kernels.hist`).

    ``result`` (int64[4]) receives messages echoed, errors (a wrong echo, a closed or corrupt
    connection), connections that finished, and times it parked. ``group_of[i]`` numbers
    connection ``i``'s worker group (0, 1, ...): after a pass the generator wakes each parked
    worker once, however many of its connections got requests. Every connection is to one server, whose client
    page for this process is ``bell``: when a pass moves nothing, the generator spins ``spins``
    rounds, then announces on that page's doorbell, looks at every unfinished connection once
    more, and sleeps until the server rings for any of them. Returns :data:`OK` or
    :data:`TIMEOUT` (nothing moved for ``timeout_ns``).
    """
    if messages <= 0:
        return OK
    count = len(requests)
    sent = np.zeros(count, np.int64)
    received = np.zeros(count, np.int64)
    failed = np.zeros(count, np.bool_)
    wrote_in = np.zeros(count, np.int64)  # the pass in which a connection last wrote
    notified_in = np.zeros(count, np.int64)  # by group: the pass in which its worker was notified
    passes = 0
    stamps = payload[:8].view(np.int64)
    echoed = out[:8].view(np.int64)
    finished = 0
    spin_ns = spins * SPIN_ROUND_NS
    idle_since = -1
    last_progress = monotonic_ns()
    while finished < count:
        progress = 0
        passes += 1
        for i in range(count):
            if failed[i] or received[i] == messages:
                continue
            reader = states[i, :ring.STATE_SIZE]
            writer = states[i, ring.STATE_SIZE:]
            while True:
                length = ring.try_read(responses[i], reader, out)
                if length == ring.EMPTY:
                    break
                if length != payload.size:
                    finished += _failed(result, failed, i)
                    break
                record(rtt_counts, rtt_meta, monotonic_ns() - echoed[0])
                received[i] += 1
                result[0] += 1
                progress += 1
                if received[i] == messages:
                    finished += 1
                    result[2] += 1
                    break
            if failed[i] or received[i] == messages:
                continue
            if connection_state(controls[i]) != OPEN:
                finished += _failed(result, failed, i)
                continue
            wrote = 0
            while sent[i] < messages and sent[i] - received[i] < window:
                stamps[0] = monotonic_ns()
                status = ring.try_write(requests[i], writer, payload, 0, 0)
                if status == ring.FULL:
                    break
                if status != ring.OK:
                    finished += _failed(result, failed, i)
                    break
                sent[i] += 1
                wrote += 1
            if wrote > 0:
                progress += wrote
                wrote_in[i] = passes
        for i in range(count):
            group = group_of[i]
            if wrote_in[i] == passes and notified_in[group] != passes:
                notify_server(controls[i], groups[i])
                # The worker announces only in connections it serves: one the server closed says
                # nothing, so the group's next connection that wrote asks again. Read after the
                # notify's barrier, an open state means the worker announces here before it
                # looks at this pass's requests.
                if connection_state(controls[i]) == OPEN:
                    notified_in[group] = passes
        now = monotonic_ns()
        if progress > 0:
            idle_since = -1
            last_progress = now
            continue
        if timeout_ns >= 0 and now - last_progress > timeout_ns:
            return TIMEOUT
        if idle_since < 0:
            idle_since = now
        if now - idle_since < spin_ns:
            spin_pause()
            continue
        ticket = futex.doorbell_prepare(bell, CLIENT_PAGE_BELL)
        ready = False
        for i in range(count):
            if not failed[i] and received[i] < messages:
                if ring.pending(responses[i], states[i, :ring.STATE_SIZE]) != 0 \
                        or connection_state(controls[i]) != OPEN:
                    ready = True
                    break
        if ready:
            futex.doorbell_cancel(bell, CLIENT_PAGE_BELL)
        else:
            result[3] += 1
            # The limit only brings the timeout check round: a ring for any connection wakes it.
            futex.doorbell_sleep(bell, CLIENT_PAGE_BELL, ticket, PARK_NS)
        idle_since = -1
    return OK
