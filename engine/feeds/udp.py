"""UDP: the engine's packets (:mod:`ringbook.engine.feeds.packet`) over a socket, both ways.

Receiving (``--feed udp:HOST:PORT``): the socket asks for a 4 MiB
``SO_RCVBUF`` and reports what the kernel granted (Linux doubles the request
for its own bookkeeping and caps it at ``net.core.rmem_max``). Packets are
received in batches of up to :data:`BATCH` into one preallocated array
(``recv_into``: no Python object per packet), then one njit call per batch
checks each packet's sequence and writes it into the raw ring, stamped with
the TSC. A sequence above the next expected one counts its missing packets as
gaps and puts a ``RECORD_GAP`` marker into the ring (so the journal and a
replay see it); one below it is a reorder (late or duplicate), counted and
dropped. The first packet received sets the expectation.

Sending (``ringbook send``): :func:`send` writes packets to an address, paced
at a rate in events/s; ``skip_every`` leaves out every k-th packet on purpose
(the receiver must count the gaps).
"""

import select
import socket
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

    def report(self):
        return {"udp": {"address": f"{self.host}:{self.socket.getsockname()[1]}",
                        "rcvbuf_requested": REQUESTED_RCVBUF, "rcvbuf_granted": self.rcvbuf,
                        "packets_received": self.received}}

    def run(self, context):
        rows = np.zeros((BATCH, 2048), np.uint8)
        views = [memoryview(rows[i]) for i in range(BATCH)]
        lengths = np.zeros(BATCH, np.int64)
        state = np.zeros(2, np.int64)
        marker = np.zeros(2, np.int64)
        context.counters[C.RCVBUF_BYTES] = self.rcvbuf
        receive = self.socket.recv_into
        events = 0
        while not context.control[0]:
            ready, _, _ = select.select([self.socket], [], [], 0.05)
            if not ready:
                continue
            count = 0
            while count < BATCH:
                try:
                    lengths[count] = receive(views[count])
                except BlockingIOError:
                    break
                count += 1
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
