"""Feeds for the engine: what ``--feed`` names, as a source that a feed thread runs.

A source knows its instruments and book shape, and ``run(context)`` writes
its packets (:mod:`ringbook.engine.feeds.packet`) into the raw ring through
:func:`ringbook.engine.pipeline.publish` until it ends or is told to stop.

``synthetic``
    :mod:`ringbook.engine.feeds.synthetic_stream`, endless (``--events`` or
    ``--duration`` bounds it), as fast as possible or paced at ``--rate``
    events/s.
``lobster:PATH``, ``binance:PATH``, ``kalshi:PATH``
    A file through the feed readers, as fast as possible or at the recorded
    speed times ``--speed`` (receive times when the file has them, else the
    exchange's).
``journal:DIR``
    The ``raw`` stream of a journal the engine wrote: its packets again, at
    recorded speed times ``--speed`` or as fast as possible.
``udp:HOST:PORT``
    :mod:`ringbook.engine.feeds.udp`.
"""

from dataclasses import dataclass, field

import numpy as np

from ringbook.engine.feeds import packet

CHUNK = 4096


@dataclass
class FeedContext:
    """What a feed's thread writes with; made by the engine."""

    slab: np.ndarray
    producer: np.ndarray
    drop: bool
    spin: bool
    strategy: np.ndarray
    control: np.ndarray
    counters: np.ndarray
    origin_ticks: int
    ticks_per_ns: float
    max_events: int = 0          # 0: unbounded
    extra: dict = field(default_factory=dict)


def publish_arrays(context, buffer, offsets, counts, due_ns, max_events=None):
    """Publish packets in chunks, stopping at ``max_events`` (default ``context.max_events``).

    Returns ``(events written or dropped, stopped)``: ``stopped`` when told to stop
    before the end. Raises ``RuntimeError`` on a ring error status.
    """
    from ringbook.engine.pipeline import DONE, publish
    handled_events = 0
    total = len(counts)
    limit = context.max_events if max_events is None else max_events
    if limit:
        cumulative = np.cumsum(counts)
        total = int(np.searchsorted(cumulative, limit) + 1) if len(cumulative) else 0
        total = min(total, len(counts))
    empty = np.zeros(0, np.int64)
    for start in range(0, total, CHUNK):
        stop = min(start + CHUNK, total)
        written, status = publish(context.slab, context.producer, buffer, offsets[start:stop + 1],
                                  counts[start:stop], due_ns[start:stop] if len(due_ns) else empty,
                                  context.origin_ticks, context.ticks_per_ns, context.drop, context.spin,
                                  context.strategy, context.control, context.counters)
        handled_events += int(counts[start:start + written].sum())
        if status < 0:
            raise RuntimeError(f"raw ring write failed with status {status}")
        if status != DONE:
            return handled_events, True
    return handled_events, False


class SyntheticSource:
    bounded = False

    def __init__(self, seed=0, rate=None, n_symbols=16):
        from ringbook.engine.feeds.synthetic_stream import SyntheticStream
        self.stream = SyntheticStream(n_symbols, seed=seed, chunk=CHUNK)
        self.rate = rate
        self.instruments = self.stream.instruments
        self.n_symbols = n_symbols
        self.ticks = np.ones(n_symbols, np.int64)
        self.order_capacity = 16
        self.total_events = None
        self.description = f"synthetic (seed {seed}, {n_symbols} symbols" + (
            f", {rate:g} events/s)" if rate else ", as fast as possible)")

    def warm_up(self):
        """Make the first chunk now (loading the generator's kernel), before the engine's clock starts."""
        self._first = self.stream.next_chunk()

    def run(self, context):
        from ringbook.engine.pipeline import DONE, publish
        done_events = 0
        empty = np.zeros(0, np.int64)
        ns_per_event = 1e9 / self.rate if self.rate else 0.0
        while True:
            first, self._first = getattr(self, "_first", None), None
            buffer, offsets, counts = first if first is not None else self.stream.next_chunk()
            if context.max_events:
                left = context.max_events - done_events
                if left <= 0:
                    return
                cumulative = np.cumsum(counts)
                keep = min(int(np.searchsorted(cumulative, left)) + 1, len(counts))
                counts = counts[:keep]
                offsets = offsets[:keep + 1]
            due = empty
            if self.rate:
                before = done_events + np.concatenate(([0], np.cumsum(counts)[:-1]))
                due = (before * ns_per_event).astype(np.int64)
            written, status = publish(context.slab, context.producer, buffer, offsets, counts, due,
                                      context.origin_ticks, context.ticks_per_ns, context.drop,
                                      context.spin, context.strategy, context.control, context.counters)
            done_events += int(counts[:written].sum())
            if status < 0:
                raise RuntimeError(f"raw ring write failed with status {status}")
            if status != DONE:
                return


class PacketArraySource:
    """Packets held in memory (``buffer``, ``offsets``, ``counts``, receive ``times``),
    written as fast as possible or at recorded speed times ``speed``."""

    bounded = True

    def run(self, context):
        due = np.zeros(0, np.int64)
        if self.speed and len(self.times):
            due = ((self.times - self.times[0]) / self.speed).astype(np.int64)
        publish_arrays(context, self.buffer, self.offsets, self.counts, due)


class EventFileSource(PacketArraySource):
    """A file read by a feed reader, replayed as packets."""

    bounded = True

    def __init__(self, kind, path, speed=None):
        from ringbook.engine.check import price_ticks
        from ringbook.engine.feeds import binance, kalshi, lobster
        from ringbook.kernels.orders import order_slots_for
        readers = {"lobster": lobster.read_messages, "binance": binance.read_capture,
                   "kalshi": kalshi.read_messages}
        feed = readers[kind](path)
        self.kind, self.path, self.speed = kind, str(path), speed
        self.instruments = feed.instruments
        self.n_symbols = max(len(feed.instruments), 1)
        events = feed.events
        self.ticks = (price_ticks(events, self.n_symbols) if kind == "binance"
                      else np.asarray(feed.instruments.table["tick"][:self.n_symbols], np.int64))
        # The whole file is known: a table of twice its adds never fills (a live feed's would have to grow).
        self.order_capacity = order_slots_for(events) if kind == "lobster" else 16
        times = np.where(events["local_ns"] != 0, events["local_ns"], events["exchange_ns"])
        self.buffer, self.offsets, first = packet.encode(events, send_ns=times)
        self.counts = ((np.diff(self.offsets) - packet.HEADER_BYTES) // packet.EVENT_BYTES).astype(np.int64)
        self.times = times[first] if len(first) else np.zeros(0, np.int64)
        self.total_events = int(self.counts.sum())
        self.events = events
        self.description = f"{kind} {path}" + (f" at {speed:g}x recorded speed" if speed else "")



class JournalSource:
    """The ``raw`` stream of an engine journal: its data packets again, read span by span
    (memory bounded whatever the journal's size), as fast as possible or at recorded speed
    times ``speed``."""

    bounded = True

    def __init__(self, root, speed=None):
        from ringbook.engine.replay import read_description
        run = read_description(root)
        self.root = root
        self.instruments = run.instruments
        self.n_symbols = run.n_symbols
        self.ticks = run.ticks
        self.order_capacity = run.order_capacity
        self.speed = speed
        self.total_events = None  # known only once read
        self.description = f"journal {root}" + (f" at {speed:g}x recorded speed" if speed else "")

    def run(self, context):
        from ringbook.engine.pipeline import RECORD_DATA
        from ringbook.engine.replay import raw_spans
        first_ns = None
        left = context.max_events or None
        for span in raw_spans(self.root):
            lengths = np.diff(span.offsets)
            keep = span.kinds == RECORD_DATA  # the feed's own markers are not replayed
            buffer = span.data[np.repeat(keep, lengths)]
            offsets = np.zeros(int(keep.sum()) + 1, np.int64)
            np.cumsum(lengths[keep], out=offsets[1:])
            counts = ((lengths[keep] - packet.HEADER_BYTES) // packet.EVENT_BYTES).astype(np.int64)
            times = span.receive_ns[keep]
            due = np.zeros(0, np.int64)
            if self.speed and len(times):
                first_ns = times[0] if first_ns is None else first_ns
                due = ((times - first_ns) / self.speed).astype(np.int64)
            handled, finished = publish_arrays(context, buffer, offsets, counts, due, max_events=left)
            if left is not None:
                left -= handled
            if finished or (left is not None and left <= 0):
                return


def open_source(spec, *, seed=0, rate=None, speed=None, symbols=16):
    """The source ``--feed`` names (see the module docstring).

    Raises
    ------
    ValueError
        An unknown feed, or a spec without its path or address.
    """
    spec = spec or "synthetic"
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        return SyntheticSource(seed=seed, rate=rate, n_symbols=symbols)
    if kind in ("lobster", "binance", "kalshi"):
        if not rest:
            raise ValueError(f"--feed {spec!r}: give the file, as {kind}:PATH")
        return EventFileSource(kind, rest, speed=speed)
    if kind == "journal":
        if not rest:
            raise ValueError(f"--feed {spec!r}: give the journal, as journal:DIR")
        return JournalSource(rest, speed=speed)
    if kind == "udp":
        from ringbook.engine.feeds.udp import UdpSource, parse_address
        return UdpSource(*parse_address(rest), n_symbols=symbols)
    raise ValueError(f"--feed {spec!r}: expected synthetic, lobster:PATH, binance:PATH, kalshi:PATH, "
                     f"journal:DIR or udp:HOST:PORT")
