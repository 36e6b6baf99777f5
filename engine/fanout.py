"""Market data fan-out between processes: a :class:`Publisher` and its :class:`Subscriber`.

The publisher listens on a Unix domain socket under a name (as
:class:`ringbook.engine.ipc.Server` does: mode 0600, ``SO_PEERCRED`` uid check).
A subscriber connects, says its policy (``wait`` or ``drop``), and receives
its own ring in a sealed memfd (``SCM_RIGHTS``). :meth:`Publisher.publish`
offers each batch of event records (:data:`ringbook.kernels.events.EVENT_DTYPE`)
to every subscriber (:func:`ringbook.kernels.fanout.offer`), in the caller's
thread; the engine's callback (:meth:`Publisher.engine_state`) offers each
message's events and then the top-of-book changes it made
(:data:`ringbook.kernels.fanout.TOP_DTYPE`). A subscriber's process ending is
seen on its socket and it is dropped from the next batch on.
:meth:`Subscriber.receive_batch` gives both kinds as numpy record arrays,
:meth:`Subscriber.receive` the events.
"""

import os
import selectors
import socket
import threading
from collections import Counter

import numba
import numpy as np
from numba import types

from ringbook.engine import ipc
from ringbook.engine.ring import new_state
from ringbook.kernels import fanout as kfan
from ringbook.kernels import futex, ring
from ringbook.kernels.book import NO_PRICE
from ringbook.kernels.events import EVENT_DTYPE
from ringbook.kernels.status import status_name
from ringbook.kernels.wait import wait_strategy

GREETING_OK = b"RBFAN 1 OK\n"
RECORD_BYTES = kfan.RECORD_BYTES
TOP_DTYPE = kfan.TOP_DTYPE
SLOT_SIZE = 1 << (RECORD_BYTES + ring.SLOT_HEADER_BYTES - 1).bit_length()


def _slab_list(items):
    listing = numba.typed.List.empty_list(types.uint8[::1])
    for item in items:
        listing.append(item)
    return listing


class Publisher:
    """Offers events to every subscriber of ``name``.

    Parameters
    ----------
    name : str
        Subscribers connect to :func:`ringbook.engine.ipc.socket_path` ``(name)``.
    slot_count : int
        Events each subscriber's ring holds (a power of two).
    wait_timeout : float
        Seconds a ``wait`` subscriber may stay full before it is closed.
    max_subscribers : int
        Subscribers served at once; more are refused.
    max_symbols : int
        Symbols whose top of book the engine's callback follows (symbols from 0); events of
        other symbols are offered, their tops not.

    One thread publishes (:meth:`publish`, or the engine's book consumer
    through :meth:`engine_state`); the acceptor thread adds a subscriber by
    filling a free row and then marking it active, and lets one go by marking
    it leaving: the publishing thread retires it, and only then is the row
    reused.
    """

    def __init__(self, name, *, slot_count=4096, wait_timeout=5.0, spins=futex.DEFAULT_SPINS, allowed_uids=None,
                 max_subscribers=64, max_symbols=1 << 16):
        self.name = name
        self.path = ipc.socket_path(name)
        self.slot_count = slot_count
        if ring.check_geometry(SLOT_SIZE, slot_count, 1) != ring.OK:
            raise ValueError(f"slot_count must be a power of two in 2..2**30, got {slot_count}")
        self.wait_timeout_ns = int(wait_timeout * 1e9)
        self.strategy = wait_strategy(spins=spins)
        self.allowed_uids = {os.geteuid()} if allowed_uids is None else set(allowed_uids)
        self.asymmetric = futex.register_asymmetric()
        self.counters = np.array([0, self.wait_timeout_ns], np.int64)  # next sequence, wait limit
        # The last top published per symbol (best bid price, size, best ask price, size): an empty book.
        self.tops = np.zeros((max_symbols, 4), np.int64)
        self.tops[:, [kfan.TOP_BID_PRICE, kfan.TOP_ASK_PRICE]] = NO_PRICE
        self._top = np.zeros(1, TOP_DTYPE)
        self.closed = Counter()
        self.refused = Counter()
        # Fixed capacity: the publishing thread reads these while the acceptor fills free rows.
        self._subscribers = [None] * max_subscribers  # row -> dict or None
        self._dummy = np.zeros(ring.region_bytes(SLOT_SIZE, 2, 1), np.uint8)
        self._regions = _slab_list([self._dummy] * max_subscribers)
        self._rings = _slab_list([self._dummy] * max_subscribers)
        self._states = np.zeros((max_subscribers, ring.STATE_SIZE), np.int64)
        self._table = np.zeros((max_subscribers, kfan.TABLE_COLUMNS), np.int64)
        self._stopping = threading.Event()
        self._listener = None
        self._thread = None

    def start(self):
        self._listener = ipc.listen(self.path)
        self._thread = threading.Thread(target=self._accept_loop, name="ringbook-fanout-acceptor", daemon=True)
        self._thread.start()
        empty = np.zeros((0, RECORD_BYTES), np.uint8)
        kfan.offer(self._regions, self._rings, self._states, self._table, empty, kfan.RECORD_EVENT, 0, self.strategy,
                   0)  # compiled
        return self

    def engine_state(self):
        """``(callback, state)`` for the engine's book consumer: every event it applies is offered,
        then the top-of-book changes of its message (:func:`ringbook.kernels.fanout.publish_event`)."""
        return kfan.publish_event, (self._regions, self._rings, self._states, self._table, self.strategy,
                                    self.counters, self.tops, self._top, self._top.view(np.uint8).reshape(1, -1))

    @property
    def sequence(self):
        """Events offered so far."""
        return int(self.counters[0])

    # The acceptor thread.

    def _accept_loop(self):
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        while not self._stopping.is_set():
            for key, _ in selector.select(0.05):
                if key.data is None:
                    self._accept(selector)
                    continue
                try:
                    data = key.fileobj.recv(64)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
                    row = key.data["row"]
                    if self._subscribers[row] is key.data:
                        self._table[row, kfan.LEAVING] = 1
            self._reap()
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()

    def _accept(self, selector):
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            pid, uid, _ = ipc.peer_credentials(sock)
            if uid not in self.allowed_uids:
                self.refused[f"uid {uid}"] += 1
                sock.sendall(ipc.GREETING_REFUSED + f"uid {uid} (pid {pid}) is not allowed on {self.name}\n".encode())
                sock.close()
                return
            words = sock.recv(64).decode(errors="replace").split()
            policy = kfan.POLICIES.get(words[1] if len(words) == 2 and words[0] == "SUBSCRIBE" else "")
            if policy is None:
                sock.sendall(ipc.GREETING_REFUSED + b"expected 'SUBSCRIBE wait' or 'SUBSCRIBE drop'\n")
                sock.close()
                return
            row = next((r for r, taken in enumerate(self._subscribers) if taken is None), None)
            if row is None:
                self.refused["full"] += 1
                sock.sendall(ipc.GREETING_REFUSED + f"{self.name} serves {len(self._subscribers)} subscribers "
                             f"already\n".encode())
                sock.close()
                return
            subscriber = self._new_subscriber(policy)
            socket.send_fds(sock, [GREETING_OK], [subscriber["fd"]])
            os.close(subscriber["fd"])
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        subscriber["row"] = row
        self._subscribers[row] = subscriber
        self._regions[row], self._rings[row] = subscriber["header"], subscriber["ring"]
        self._states[row] = subscriber["state"]
        table = self._table[row]
        table[:] = 0
        table[kfan.POLICY] = subscriber["policy"]
        table[kfan.ACTIVE] = 1  # last: the publishing thread may take it from here
        selector.register(sock, selectors.EVENT_READ, subscriber)

    def _new_subscriber(self, policy):
        ring_bytes = ring.region_bytes(SLOT_SIZE, self.slot_count, 1)
        fd, mapping, slab = ipc.sealed_region(kfan.HEADER_BYTES + ring_bytes, "fanout")
        header, ring_slab = slab[:kfan.HEADER_BYTES], slab[kfan.HEADER_BYTES:]
        ring.format_slab(ring_slab, SLOT_SIZE, self.slot_count, 1)
        for bell in (ring.DATA_BELL_OFFSET, ring.SPACE_BELL_OFFSET):
            futex.set_asymmetric(ring_slab, bell, self.asymmetric)
        header[8:12].view(np.uint32)[0] = kfan.VERSION
        header[kfan.POLICY_OFFSET:kfan.POLICY_OFFSET + 4].view(np.uint32)[0] = policy
        header[:8].view(np.uint64)[0] = kfan.MAGIC
        state = new_state()
        if ring.open_producer(ring_slab, state) != ring.OK:
            raise OSError("a subscriber's new ring did not open")
        return {"fd": fd, "mapping": mapping, "header": header, "ring": ring_slab, "state": state,
                "policy": policy, "row": -1}

    def _reap(self):
        """Free the rows the publishing thread retired (closed, or let go after leaving)."""
        for row, subscriber in enumerate(self._subscribers):
            if subscriber is not None and self._table[row, kfan.ACTIVE] == 0:
                reason = int(self._table[row, kfan.REASON])
                self.closed["gone" if reason == 0 else "stalled" if reason == ring.TIMEOUT else "corrupt"] += 1
                self._regions[row] = self._rings[row] = self._dummy
                self._subscribers[row] = None
                try:
                    subscriber["mapping"].close()
                except BufferError:
                    pass

    @property
    def subscribers(self):
        """Subscribers being served."""
        return int(np.count_nonzero(self._table[:, kfan.ACTIVE] == 1))

    def publish(self, events):
        """Offer ``events`` (records of ``EVENT_DTYPE``) to every subscriber; how many were closed."""
        events = np.ascontiguousarray(events, dtype=EVENT_DTYPE)
        records = events.view(np.uint8).reshape(len(events), RECORD_BYTES)
        closed = kfan.offer(self._regions, self._rings, self._states, self._table, records, kfan.RECORD_EVENT,
                            self.counters[0], self.strategy, self.wait_timeout_ns)
        self.counters[0] += len(events)
        return closed

    def stats(self):
        rows = [(row, s) for row, s in enumerate(self._subscribers) if s is not None and self._table[row, kfan.ACTIVE]]
        return {"name": self.name, "published": self.sequence, "closed": dict(self.closed),
                "refused": dict(self.refused),
                "subscribers": [{"policy": "wait" if s["policy"] == kfan.WAIT else "drop",
                                 "sent": int(self._table[row, kfan.SENT]),
                                 "dropped": int(self._table[row, kfan.DROPPED])} for row, s in rows]}

    def close(self):
        """End the stream: every subscriber reads what is left, then sees the end."""
        for row, subscriber in enumerate(self._subscribers):
            if subscriber is not None:
                subscriber["header"][kfan.STATE_OFFSET:kfan.STATE_OFFSET + 4].view(np.uint32)[0] = kfan.ENDED
                futex.doorbell_wake(subscriber["ring"], ring.DATA_BELL_OFFSET)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
            self.path.unlink(missing_ok=True)
            self._listener = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()


class Subscriber:
    """Events from the publisher ``name``, with ``policy`` ``"drop"`` (the default) or ``"wait"``.

    Attributes ``received`` (records: events and tops), ``events``, ``tops``,
    ``dropped`` (what the publisher counted for this subscriber) and ``gaps``
    (records missing between the sequences received) describe the stream so
    far; ``ended`` is set once the publisher finished and everything before was
    read.
    """

    def __init__(self, name, policy="drop", *, timeout=30.0, spins=futex.DEFAULT_SPINS):
        if policy not in kfan.POLICIES:
            raise ValueError(f"policy must be 'wait' or 'drop', got {policy!r}")
        self.name, self.policy, self.spins = name, policy, spins
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(ipc.socket_path(name)))
            self.sock.sendall(f"SUBSCRIBE {policy}\n".encode())
            message, fds, _, _ = socket.recv_fds(self.sock, 256, 1)
            if not message.startswith(GREETING_OK) or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                reason = message.decode(errors="replace").strip()
                raise ipc.IpcError(f"publisher {name!r} refused the subscription: {reason}", reason)
            try:
                self._mapping, slab = ipc.map_sealed(fds[0], "subscription region", kfan.HEADER_BYTES)
            finally:
                os.close(fds[0])
        except BaseException:
            self.sock.close()
            raise
        self.header, self.ring = slab[:kfan.HEADER_BYTES], slab[kfan.HEADER_BYTES:]
        if int(self.header[:8].view(np.uint64)[0]) != kfan.MAGIC:
            raise ipc.IpcError(f"publisher {name!r} sent a region that is not a subscription")
        self.state = new_state()
        status = ring.open_consumer(self.ring, 0, self.state)
        if status != ring.OK:
            raise ipc.IpcError(f"subscription ring did not open: {status_name(status)}")
        if not futex.register_asymmetric():
            futex.set_asymmetric(self.ring, ring.SPACE_BELL_OFFSET, False)  # this side fences instead
        self.counters = np.array([0, 0, -1], np.int64)  # received, gaps, next sequence
        self.ended = False
        self.events = self.tops = 0
        #: The stream sequences of the records the last read returned (events and tops, in order).
        self.sequences = np.zeros(0, np.int64)
        #: Their kinds (:data:`ringbook.kernels.fanout.RECORD_EVENT` or ``RECORD_TOP``).
        self.kinds = np.zeros(0, np.uint8)
        #: The top-of-book records that came with the events the last :meth:`receive` returned.
        self.last_tops = np.zeros(0, TOP_DTYPE)

    @property
    def received(self):
        return int(self.counters[0])

    @property
    def gaps(self):
        return int(self.counters[1])

    @property
    def dropped(self):
        return int(self.header[kfan.DROPPED_OFFSET:kfan.DROPPED_OFFSET + 8].view(np.int64)[0])

    def receive_batch(self, max_records=4096, timeout=5.0):
        """The next records as ``(events, tops)``: record arrays of ``EVENT_DTYPE`` and
        :data:`TOP_DTYPE`, at least one record in all; both empty once the stream ended.
        Waits up to ``timeout`` s (``None``: no limit), then raises ``TimeoutError``.
        ``sequences`` and ``kinds`` give the stream's order of the two."""
        out = np.zeros((max_records, RECORD_BYTES), np.uint8)
        sequences = np.zeros(max_records, np.int64)
        kinds = np.zeros(max_records, np.uint8)
        timeout_ns = -1 if timeout is None else int(timeout * 1e9)
        count = kfan.take(self.header, self.ring, self.state, out, sequences, kinds, self.spins, timeout_ns,
                          self.counters)
        if count == kfan.STREAM_ENDED:
            self.ended = True
            self.sequences, self.kinds = sequences[:0], kinds[:0]
            return np.zeros(0, EVENT_DTYPE), np.zeros(0, TOP_DTYPE)
        if count == ring.TIMEOUT:
            raise TimeoutError(f"no event from {self.name!r} within {timeout} s")
        if count < 0:
            raise ipc.IpcError(f"subscription ring: {status_name(count)}")
        self.sequences, self.kinds = sequences[:count], kinds[:count]
        is_top = self.kinds == kfan.RECORD_TOP
        events = out[:count][~is_top].copy().view(EVENT_DTYPE).reshape(-1)
        tops = out[:count][is_top][:, :TOP_DTYPE.itemsize].copy().view(TOP_DTYPE).reshape(-1)
        self.events += len(events)
        self.tops += len(tops)
        return events, tops

    def receive(self, max_events=4096, timeout=5.0):
        """The next events (a record array of ``EVENT_DTYPE``, at least one), waiting up to
        ``timeout`` s (``None``: no limit); an empty array once the stream ended; ``TimeoutError``.
        Top-of-book records read on the way are in ``last_tops``."""
        tops = []
        while True:
            events, batch_tops = self.receive_batch(max_events, timeout)
            tops.append(batch_tops)
            if len(events) or self.ended:
                self.last_tops = np.concatenate(tops)
                return events

    def summary(self):
        return {"received": self.received, "events": self.events, "tops": self.tops, "dropped": self.dropped,
                "gaps": self.gaps, "ended": self.ended}

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

