"""The embedded synthetic feed: an endless, deterministic market of many symbols, made in njit.

``ringbook run`` uses it when no ``--feed`` is given, so the engine runs on a
fresh machine with no data. For a seed it produces the same packets in the
same order on every machine. The mix, per message:

- 70%: a depth update of 1-4 levels (``L2_SET``) on one symbol, near its mid
  price, carrying the symbol's next update id (``sequence``, with
  ``prev_sequence`` the one before); one time in :data:`GAP_ONE_IN` the id
  jumps by two, so the book sees a sequence gap;
- 25%: a trade print at the touch (``TRADE``);
- 5%: the mid price moves a tick, with the new touch level set.

Prices have 2 decimals on a tick of 0.01 around 100.00; sizes 2 decimals.
"""

import numpy as np

from ringbook.engine.feeds import packet
from ringbook.kernels.events import (ASK, BID, EVENT_DTYPE, FLAG_BATCH_END, Instruments,
                                     KIND_L2_SET, KIND_TRADE)
from ringbook.kernels.jit_options import kernel

GAP_ONE_IN = 20_000
PRICE_SCALE = 2
SIZE_SCALE = 2
START_MID = 10_000
LEVELS = 20

# state words
RNG = 0
TIME_NS = 1
EVENTS = 2         # events generated so far
PACKETS = 3        # packets generated so far
STATE_WORDS = 4


def instruments(n_symbols):
    """The instrument table of a synthetic feed of ``n_symbols`` symbols (``SYN0000`` ...)."""
    table = Instruments(capacity=max(n_symbols, 1))
    for symbol in range(n_symbols):
        table.intern(f"SYN{symbol:04d}", price_scale=PRICE_SCALE, size_scale=SIZE_SCALE, tick=1)
    return table


class SyntheticStream:
    """A synthetic market that makes packets in chunks.

    Parameters
    ----------
    n_symbols : int
    seed : int
    chunk : int
        Packets made per :meth:`next_chunk`.
    """

    def __init__(self, n_symbols=16, seed=0, chunk=4096):
        if n_symbols < 1:
            raise ValueError(f"n_symbols must be at least 1, got {n_symbols}")
        self.n_symbols = n_symbols
        self.instruments = instruments(n_symbols)
        self.state = np.zeros(STATE_WORDS, np.int64)
        # splitmix-style scramble of the seed; xorshift needs a nonzero state
        self.state[RNG] = (int(seed) * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % (1 << 63) or 1
        self.state[TIME_NS] = 1_700_000_000 * 10**9
        self.mids = np.full(n_symbols, START_MID, np.int64)
        self.sequences = np.zeros(n_symbols, np.int64)
        self.chunk = chunk
        self.buffer = np.zeros(chunk * packet.MAX_PACKET_BYTES, np.uint8)
        self.offsets = np.zeros(chunk + 1, np.int64)
        self.counts = np.zeros(chunk, np.int64)
        self.scratch = np.zeros(packet.MAX_EVENTS, EVENT_DTYPE)

    def next_chunk(self, packets=None):
        """Make the next ``packets`` (at most ``chunk``) packets: ``(buffer, offsets, event_counts)``.

        The arrays are reused by the next call.
        """
        packets = self.chunk if packets is None else min(int(packets), self.chunk)
        generate(self.state, self.mids, self.sequences, self.scratch, self.scratch.view(np.uint8),
                 self.buffer, self.offsets, self.counts, packets)
        return self.buffer, self.offsets[:packets + 1], self.counts[:packets]

    def events(self, packets):
        """The events of the next ``packets`` packets as one array (for tests and ``ringbook send``)."""
        out = []
        while packets > 0:
            buffer, offsets, counts = self.next_chunk(packets)
            for i in range(len(counts)):
                out.append(buffer[offsets[i] + packet.HEADER_BYTES:offsets[i + 1]].view(EVENT_DTYPE))
            packets -= len(counts)
        return np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)


@kernel
def _next_random(state):
    """xorshift64*: the next 64 random bits as a non-negative int64."""
    x = state[RNG]
    x ^= (x >> 12) & 0x000FFFFFFFFFFFFF
    x ^= x << 25
    x ^= (x >> 27) & 0x0000001FFFFFFFFF
    state[RNG] = x
    return (x * np.int64(0x2545F4914F6CDD1D)) & np.int64(0x7FFFFFFFFFFFFFFF)


@kernel
def _below(state, n):
    """A random integer in ``0 .. n-1``."""
    return (_next_random(state) >> 11) % n


@kernel
def generate(state, mids, sequences, scratch, scratch_bytes, buffer, offsets, counts, packets):
    """Make ``packets`` packets into ``buffer`` (see :class:`SyntheticStream`); no allocation."""
    n_symbols = mids.shape[0]
    offset = 0
    offsets[0] = 0
    for p in range(packets):
        state[TIME_NS] += 1000 + _below(state, 100_000)
        now = state[TIME_NS]
        symbol = _below(state, n_symbols)
        roll = _below(state, 100)
        n = 0
        sequence = 0
        prev = 0
        if roll < 70:
            held = sequences[symbol]
            step = 2 if _below(state, GAP_ONE_IN) == 0 else 1
            sequence = held + step
            prev = sequence - 1
            sequences[symbol] = sequence
            n = 1 + _below(state, 4)
            for i in range(n):
                side = BID if _below(state, 2) == 0 else ASK
                distance = 1 + _below(state, LEVELS)
                quantity = 0 if _below(state, 4) == 0 else (1 + _below(state, 1000)) * 100
                scratch[i].kind = KIND_L2_SET
                scratch[i].side = side
                scratch[i].price = mids[symbol] - side * distance
                scratch[i].quantity = quantity
                scratch[i].order_id = 0
        elif roll < 95:
            n = 1
            side = BID if _below(state, 2) == 0 else ASK
            scratch[0].kind = KIND_TRADE
            scratch[0].side = side
            scratch[0].price = mids[symbol] + side
            scratch[0].quantity = (1 + _below(state, 100)) * 100
            scratch[0].order_id = state[PACKETS]
        else:
            held = sequences[symbol]
            sequence = held + 1
            prev = held
            sequences[symbol] = sequence
            move = 1 if _below(state, 2) == 0 else -1
            mids[symbol] = max(mids[symbol] + move, LEVELS + 2)
            n = 2
            # the side the mid moved towards loses its touch; the other gets a new one
            scratch[0].kind = KIND_L2_SET
            scratch[0].side = ASK if move > 0 else BID
            scratch[0].price = mids[symbol]  # the level the mid moved onto goes
            scratch[0].quantity = 0
            scratch[0].order_id = 0
            scratch[1].kind = KIND_L2_SET
            scratch[1].side = BID if move > 0 else ASK
            scratch[1].price = mids[symbol] - (BID if move > 0 else ASK)
            scratch[1].quantity = (1 + _below(state, 1000)) * 100
            scratch[1].order_id = 0
        for i in range(n):
            scratch[i].exchange_ns = now
            scratch[i].local_ns = 0
            scratch[i].sequence = sequence
            scratch[i].prev_sequence = prev
            scratch[i].symbol = symbol
            scratch[i].flags = FLAG_BATCH_END if i == n - 1 else 0
        state[PACKETS] += 1
        state[EVENTS] += n
        packet.write_header(buffer, offset, n, state[PACKETS], now)
        for i in range(n * packet.EVENT_BYTES):
            buffer[offset + packet.HEADER_BYTES + i] = scratch_bytes[i]
        offset += packet.HEADER_BYTES + n * packet.EVENT_BYTES
        offsets[p + 1] = offset
        counts[p] = n
