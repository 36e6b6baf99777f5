"""UDP: the engine's packets (:mod:`ringbook.engine.feeds.packet`) over a socket, both ways.

Receiving (``--feed udp:HOST:PORT``): the socket asks for a 4 MiB
``SO_RCVBUF`` and reports what the kernel granted (Linux doubles the request
for its own bookkeeping and caps it at ``net.core.rmem_max``). Packets are
received in batches of up to :data:`BATCH` into one preallocated array, by
one ``recvmmsg`` call a batch where the system has it (:class:`BatchReceiver`;
``recv_into`` a packet otherwise: no Python object per packet either way),
then one njit call per batch checks each packet's sequence and writes it into
the raw ring, stamped with the TSC. A sequence above the next expected one counts its missing packets as
gaps and puts a ``RECORD_GAP`` marker into the ring (so the journal and a
replay see it); one below it is a reorder (late or duplicate), counted and
dropped. The first packet received sets the expectation.

Sending (``ringbook send``): :func:`send` writes packets to an address, paced
at a rate in events/s; ``skip_every`` leaves out every k-th packet on purpose
(the receiver must count the gaps).
"""

import ctypes
import ctypes.util
import errno
import select
import socket
import sys
import time

import numpy as np

from ringbook.engine import counters as C
from ringbook.engine.feeds import packet
from ringbook.engine.pipeline import RECORD_GAP
from ringbook.kernels import ring as kring
from ringbook.kernels.atomics import load_relaxed
from ringbook.kernels.clock import stamp
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.wait import backoff

REQUESTED_RCVBUF = 4 << 20
BATCH = 64
PACKET_CAPACITY = 2048
# njit state words
EXPECTED = 0


def parse_address(text):
    """``"HOST:PORT"`` -> ``(host, port)``; ``ValueError`` naming what is wrong."""
    host, separator, port = text.rpartition(":")
    if not separator or not host:
        raise ValueError(f"UDP address {text!r}: expected HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"UDP address {text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"UDP address {text!r}: port {number} out of range 0..65535")
    return host, number


@kernel
def ingest(rows, lengths, count, slab, producer, state, marker, drop, strategy, control, counters):
    """Check the sequence of ``rows[:count]`` (packets of ``lengths``) and write them into the ring.

    Returns 0, or a negative ring status. Packets that are not of this format
    are left out.
    """
    for i in range(count):
        length = lengths[i]
        n, sequence, _ = packet.decode_header(rows[i], length)
        if n < 0:
            continue  # not a packet of this format: never reaches the ring
        expected = state[EXPECTED]
        if expected > 0 and sequence < expected:
            counters[C.PACKET_REORDERS] += 1
            continue
        if expected > 0 and sequence > expected:
            counters[C.PACKET_GAPS] += sequence - expected
            marker[0] = expected
            marker[1] = sequence
            attempt = 0
            while True:
                status = kring.try_write(slab, producer, marker.view(np.uint8), RECORD_GAP, stamp())
                if status != kring.FULL or load_relaxed(control, 0) != 0:
                    break
                attempt = backoff(strategy, attempt)
        state[EXPECTED] = sequence + 1
        payload = rows[i, :length]
        attempt = 0
        while True:
            status = kring.try_write(slab, producer, payload, 0, stamp())
            if status != kring.FULL:
                break
            if drop:
                counters[C.DROPPED_MESSAGES] += 1
                counters[C.DROPPED_EVENTS] += n
                break
            if attempt == 0:
                counters[C.FULL_WAITS] += 1
            if load_relaxed(control, 0) != 0:
                return 0
            attempt = backoff(strategy, attempt)
        if status < 0 and status != kring.FULL:
            return status
        if status == kring.OK:
            counters[C.FEED_MESSAGES] += 1
            counters[C.FEED_EVENTS] += n
            counters[C.FEED_BYTES] += length
    return 0


class BatchReceiver:
    """Receive up to ``len(rows)`` datagrams into the rows of ``rows`` with one ``recvmmsg``
    call (Linux), their lengths into ``lengths``; ``recv_into`` one at a time elsewhere.

    The message headers and I/O vectors are built once, in numpy arrays that point into
    ``rows``: a call allocates nothing. Non-blocking: :meth:`receive` returns 0 when
    nothing is waiting.
    """

    # struct iovec {void *base; size_t len}; struct mmsghdr {struct msghdr; unsigned msg_len}
    IOVEC = np.dtype([("base", np.uint64), ("length", np.uint64)])
    MMSGHDR = np.dtype([("name", np.uint64), ("name_length", np.uint32), ("pad0", np.uint32),
                        ("iov", np.uint64), ("iov_length", np.uint64), ("control", np.uint64),
                        ("control_length", np.uint64), ("flags", np.int32), ("pad1", np.int32),
                        ("received", np.uint32), ("pad2", np.uint32)])
    MSG_DONTWAIT = 0x40

    def __init__(self, sock, rows, lengths):
        self.socket, self.rows, self.lengths = sock, rows, lengths
        self._recvmmsg = _libc_recvmmsg()
        self.method = "recvmmsg" if self._recvmmsg is not None else "recv_into"
        if self._recvmmsg is not None:
            count = len(rows)
            self.vectors = np.zeros(count, self.IOVEC)
            self.vectors["base"] = rows.ctypes.data + np.arange(count, dtype=np.uint64) * rows.strides[0]
            self.vectors["length"] = rows.shape[1]
            self.headers = np.zeros(count, self.MMSGHDR)
            self.headers["iov"] = self.vectors.ctypes.data + np.arange(count, dtype=np.uint64) * self.IOVEC.itemsize
            self.headers["iov_length"] = 1
            self._arguments = (self.socket.fileno(), ctypes.c_void_p(self.headers.ctypes.data),
                               ctypes.c_uint(count), ctypes.c_int(self.MSG_DONTWAIT), None)
        else:
            self._views = [memoryview(row) for row in rows]

    def receive(self):
        """Datagrams received now (0 when none waits); ``OSError`` naming the socket on failure."""
        if self._recvmmsg is None:
            return self._receive_one_by_one()
        count = self._recvmmsg(*self._arguments)
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, f"recvmmsg on {self.socket.getsockname()}: {errno.errorcode.get(code, code)}")
        self.lengths[:count] = self.headers["received"][:count]
        return count

    def _receive_one_by_one(self):
        count = 0
        while count < len(self._views):
            try:
                self.lengths[count] = self.socket.recv_into(self._views[count])
            except BlockingIOError:
                break
            count += 1
        return count


def _libc_recvmmsg():
    """libc's ``recvmmsg`` as a ctypes function on Linux x86-64/arm64, else ``None``."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    return function


class UdpSource:
    """``--feed udp:HOST:PORT`` (see the module docstring)."""

    bounded = False

    def __init__(self, host, port, n_symbols=16):
        from ringbook.engine.feeds.synthetic_stream import instruments
        self.host, self.port = host, port
        self.n_symbols = n_symbols
        self.instruments = instruments(n_symbols)
        self.ticks = np.ones(n_symbols, np.int64)
        self.order_capacity = 16
        self.total_events = None
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, REQUESTED_RCVBUF)
        self.rcvbuf = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.socket.bind((host, port))
        self.socket.setblocking(False)
        self.description = f"udp {host}:{self.socket.getsockname()[1]}"
        self.received = 0
        self.method = None

    def report(self):
        return {"udp": {"address": f"{self.host}:{self.socket.getsockname()[1]}",
                        "rcvbuf_requested": REQUESTED_RCVBUF, "rcvbuf_granted": self.rcvbuf,
                        "packets_received": self.received, "receive": self.method}}

    def run(self, context):
        rows = np.zeros((BATCH, PACKET_CAPACITY), np.uint8)
        lengths = np.zeros(BATCH, np.int64)
        receiver = BatchReceiver(self.socket, rows, lengths)
        self.method = receiver.method
        state = np.zeros(2, np.int64)
        marker = np.zeros(2, np.int64)
        context.counters[C.RCVBUF_BYTES] = self.rcvbuf
        while not context.control[0]:
            count = receiver.receive()
            if count == 0:
                select.select([self.socket], [], [], 0.05)
                continue
            self.received += count
            status = ingest(rows, lengths, count, context.slab, context.producer, state, marker,
                            context.drop, context.strategy, context.control, context.counters)
            if status < 0:
                raise RuntimeError(f"raw ring write failed with status {status}")
            if context.max_events and context.counters[C.FEED_EVENTS] >= context.max_events:
                return

    def close(self):
        self.socket.close()


def send(source_spec, address, *, rate=200_000, events=None, skip_every=0, seed=0, symbols=16):
    """Send packets to ``address`` (``(host, port)``) from a feed spec (``synthetic`` or a file).

    Parameters
    ----------
    rate : float or None
        Events per second (``None``: as fast as the socket takes them).
    events : int, optional
        Stop after this many events (synthetic: default 100,000).
    skip_every : int
        Leave out every ``skip_every``-th packet (0: none), to make gaps on purpose.

    Returns
    -------
    dict
        ``packets`` and ``events`` sent, ``skipped`` packets.
    """
    from ringbook.engine.feeds.live import EventFileSource, open_source
    kind = (source_spec or "synthetic").partition(":")[0]
    if kind == "synthetic":
        from ringbook.engine.feeds.synthetic_stream import SyntheticStream
        all_events = SyntheticStream(symbols, seed=seed).events(max(1, (events or 100_000)))
        buffer, offsets, _ = packet.encode(all_events)
    else:
        source = open_source(source_spec)
        if not isinstance(source, EventFileSource):
            raise ValueError(f"ringbook send: cannot send from {source_spec!r}")
        buffer, offsets = source.buffer, source.offsets
    counts = (np.diff(offsets) - packet.HEADER_BYTES) // packet.EVENT_BYTES
    if events:
        keep = int(np.searchsorted(np.cumsum(counts), events) + 1)
        counts = counts[:keep]
        offsets = offsets[:keep + 1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent_packets = sent_events = skipped = 0
    start = time.perf_counter()
    data = buffer.tobytes()
    try:
        for i in range(len(counts)):
            if skip_every and (i + 1) % skip_every == 0:
                skipped += 1
                continue
            if rate:
                due = start + sent_events / rate
                delay = due - time.perf_counter()
                if delay > 0.0005:
                    time.sleep(delay)
            sock.sendto(data[offsets[i]:offsets[i + 1]], address)
            sent_packets += 1
            sent_events += int(counts[i])
    finally:
        sock.close()
    return {"packets": sent_packets, "events": sent_events, "skipped": skipped,
            "seconds": time.perf_counter() - start}
