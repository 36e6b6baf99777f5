"""Market data fan-out between processes: a :class:`Publisher` and its :class:`Subscriber`.

The publisher listens on a Unix domain socket under a name (as
:class:`ringbook.engine.ipc.Server` does: mode 0600, ``SO_PEERCRED`` uid check).
A subscriber connects, says its policy (``wait`` or ``drop``), and receives
its own ring in a sealed memfd (``SCM_RIGHTS``). :meth:`Publisher.publish`
offers each batch of event records (:data:`ringbook.kernels.events.EVENT_DTYPE`)
to every subscriber (:func:`ringbook.kernels.fanout.offer`), in the caller's
thread; a subscriber's process ending is seen on its socket and it is dropped
from the next batch on. :meth:`Subscriber.receive` gives numpy record arrays.
"""

import os
import selectors
import socket
import struct
import threading
from collections import Counter

import numba
import numpy as np
from numba import types

from ringbook.engine import ipc
from ringbook.engine.ring import new_state
from ringbook.kernels import fanout as kfan
from ringbook.kernels import futex, ring
from ringbook.kernels.events import EVENT_DTYPE
from ringbook.kernels.wait import wait_strategy

GREETING_OK = b"RBFAN 1 OK\n"
RECORD_BYTES = EVENT_DTYPE.itemsize
SLOT_SIZE = 1 << (RECORD_BYTES + ring.SLOT_HEADER_BYTES - 1).bit_length()


def _slab_list():
    return numba.typed.List.empty_list(types.uint8[::1])


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
    """

    def __init__(self, name, *, slot_count=4096, wait_timeout=5.0, spins=futex.DEFAULT_SPINS, allowed_uids=None):
        self.name = name
        self.path = ipc.socket_path(name)
        self.slot_count = slot_count
        if ring.check_geometry(SLOT_SIZE, slot_count, 1) != ring.OK:
            raise ValueError(f"slot_count must be a power of two in 2..2**30, got {slot_count}")
        self.wait_timeout_ns = int(wait_timeout * 1e9)
        self.strategy = wait_strategy(spins=spins)
        self.allowed_uids = {os.geteuid()} if allowed_uids is None else set(allowed_uids)
        self.asymmetric = futex.register_asymmetric()
        self.sequence = 0
        self.closed = Counter()
        self.refused = Counter()
        self._lock = threading.Lock()
        self._joining, self._leaving = [], []
        self._subscribers = []  # row -> dict or None
        self._regions, self._rings = _slab_list(), _slab_list()
        self._states = np.zeros((0, ring.STATE_SIZE), np.int64)
        self._table = np.zeros((0, kfan.TABLE_COLUMNS), np.int64)
        self._dummy = np.zeros(kfan.HEADER_BYTES, np.uint8)
        self._stopping = threading.Event()
        self._listener = None
        self._thread = None

    def start(self):
        self._listener = ipc.listen(self.path)
        self._thread = threading.Thread(target=self._accept_loop, name="ringbook-fanout-acceptor", daemon=True)
        self._thread.start()
        empty = np.zeros((0, RECORD_BYTES), np.uint8)
        kfan.offer(self._regions, self._rings, self._states, self._table, empty, 0, self.strategy, 0)  # compiled
        return self

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
                    with self._lock:
                        self._leaving.append(key.data)
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
            pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
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
            subscriber = self._new_subscriber(policy)
            socket.send_fds(sock, [GREETING_OK], [subscriber["fd"]])
            os.close(subscriber["fd"])
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, subscriber)
        with self._lock:
            self._joining.append(subscriber)

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

    # The publishing thread.

    def _apply_changes(self):
        with self._lock:
            joining, self._joining = self._joining, []
            leaving, self._leaving = self._leaving, []
        for subscriber in leaving:
            row = subscriber["row"]
            if row >= 0 and self._table[row, kfan.ACTIVE] == 1:
                self._table[row, kfan.ACTIVE] = 0
                self._table[row, kfan.REASON] = 0
        for subscriber in joining:
            if None not in self._subscribers:
                self._grow(max(4, 2 * len(self._subscribers)))
            row = self._subscribers.index(None)
            self._subscribers[row] = subscriber
            subscriber["row"] = row
            self._regions[row], self._rings[row] = subscriber["header"], subscriber["ring"]
            self._states[row] = subscriber["state"]
            self._table[row] = 0
            self._table[row, kfan.POLICY] = subscriber["policy"]
            self._table[row, kfan.ACTIVE] = 1
        self._reap()

    def _grow(self, capacity):
        old = len(self._subscribers)
        self._subscribers += [None] * (capacity - old)
        for listing in (self._regions, self._rings):
            for _ in range(capacity - old):
                listing.append(self._dummy)
        states = np.zeros((capacity, ring.STATE_SIZE), np.int64)
        table = np.zeros((capacity, kfan.TABLE_COLUMNS), np.int64)
        states[:old], table[:old] = self._states, self._table
        self._states, self._table = states, table

    def _reap(self):
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
        return sum(s is not None for s in self._subscribers)

    def publish(self, events):
        """Offer ``events`` (records of ``EVENT_DTYPE``) to every subscriber; how many were closed."""
        events = np.ascontiguousarray(events, dtype=EVENT_DTYPE)
        self._apply_changes()
        records = events.view(np.uint8).reshape(len(events), RECORD_BYTES)
        closed = kfan.offer(self._regions, self._rings, self._states, self._table, records, self.sequence,
                            self.strategy, self.wait_timeout_ns)
        self.sequence += len(events)
        if closed:
            self._reap()
        return closed

    def stats(self):
        rows = [(row, s) for row, s in enumerate(self._subscribers) if s is not None]
        return {"name": self.name, "published": self.sequence, "closed": dict(self.closed),
                "refused": dict(self.refused),
                "subscribers": [{"policy": "wait" if s["policy"] == kfan.WAIT else "drop",
                                 "sent": int(self._table[row, kfan.SENT]),
                                 "dropped": int(self._table[row, kfan.DROPPED])} for row, s in rows]}

    def close(self):
        """End the stream: every subscriber reads what is left, then sees the end."""
        self._apply_changes()
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

    Attributes ``received``, ``dropped`` (what the publisher counted for this
    subscriber) and ``gaps`` (events missing between the sequences received)
    describe the stream so far; ``ended`` is set once the publisher finished
    and everything before was read.
    """

    def __init__(self, name, policy="drop", *, timeout=5.0, spins=futex.DEFAULT_SPINS):
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
            raise ipc.IpcError(f"subscription ring did not open: {ring.STATUS_NAMES.get(status, status)}")
        if not futex.register_asymmetric():
            futex.set_asymmetric(self.ring, ring.SPACE_BELL_OFFSET, False)  # this side fences instead
        self.counters = np.zeros(3, np.int64)  # received, gaps, next sequence
        self.ended = False

    @property
    def received(self):
        return int(self.counters[0])

    @property
    def gaps(self):
        return int(self.counters[1])

    @property
    def dropped(self):
        return int(self.header[kfan.DROPPED_OFFSET:kfan.DROPPED_OFFSET + 8].view(np.int64)[0])

    def receive(self, max_events=4096, timeout=5.0):
        """The next events (a record array of ``EVENT_DTYPE``, at least one), waiting up to
        ``timeout`` s (``None``: no limit); an empty array once the stream ended; ``TimeoutError``."""
        out = np.zeros((max_events, RECORD_BYTES), np.uint8)
        sequences = np.zeros(max_events, np.int64)
        timeout_ns = -1 if timeout is None else int(timeout * 1e9)
        count = kfan.take(self.header, self.ring, self.state, out, sequences, self.spins, timeout_ns, self.counters)
        if count == kfan.STREAM_ENDED:
            self.ended = True
            return np.zeros(0, EVENT_DTYPE)
        if count == ring.TIMEOUT:
            raise TimeoutError(f"no event from {self.name!r} within {timeout} s")
        if count < 0:
            raise ipc.IpcError(f"subscription ring: {ring.STATUS_NAMES.get(count, count)}")
        return out[:count].copy().view(EVENT_DTYPE).reshape(count)

    def summary(self):
        return {"received": self.received, "dropped": self.dropped, "gaps": self.gaps, "ended": self.ended}

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

