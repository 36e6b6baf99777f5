"""Slow, obvious reference implementations that the fast kernels are tested against.

One section per subject. Each reference favours clarity over speed: plain
Python, ``decimal``, sorting, dicts. Append new sections; keep them obvious.
"""


# ---------------------------------------------------------------- fixed point (kernels/fixed.py)

import decimal as _decimal  # noqa: E402
import re as _re  # noqa: E402

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
#: The syntax kernels.fixed accepts; Decimal itself also takes exponents,
#: "inf", "nan", underscores, spaces and non-ASCII digits, which we reject.
_DECIMAL_SYNTAX = _re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")
_NUMBER_RUN = _re.compile(r"[0-9.+-]+")


def naive_parse_decimal(text, scale):
    """(value, status name) for ``text`` at ``scale`` decimals, via ``decimal.Decimal``.

    Status names are those of kernels.fixed: "OK", "INVALID", "TOO_PRECISE",
    "OVERFLOW", checked in that order of precedence; value is 0 unless "OK".
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not _DECIMAL_SYNTAX.fullmatch(text):
        return 0, "INVALID"
    sign, digits, exponent = _decimal.Decimal(text).as_tuple()
    magnitude = int("".join(map(str, digits)))
    shift = exponent + scale
    if shift >= 0:
        magnitude *= 10 ** shift
    elif magnitude % 10 ** -shift:
        return 0, "TOO_PRECISE"
    else:
        magnitude //= 10 ** -shift
    value = -magnitude if sign else magnitude
    if not _INT64_MIN <= value <= _INT64_MAX:
        return 0, "OVERFLOW"
    return value, "OK"


def naive_format_decimal(value, scale, trim=False):
    """The text of ``value`` at ``scale`` decimals, via ``decimal.Decimal``; with
    ``trim``, its shortest text (no trailing zeros after the dot, no bare dot)."""
    number = _decimal.Decimal(value).scaleb(-scale)
    if trim:
        number = number.normalize() if number else _decimal.Decimal(0)
    return format(number, "f")


def naive_decimal_places(text):
    """The fewest decimals that hold ``text`` exactly, via ``decimal.Decimal``."""
    return max(0, -_decimal.Decimal(text).normalize().as_tuple().exponent)


def naive_rescale(value, from_scale, to_scale, rounding):
    """(value, status name): ``value`` from ``from_scale`` to ``to_scale`` decimals via Decimal.

    ``rounding`` is "half_even" or "down" (toward zero).
    """
    modes = {"half_even": _decimal.ROUND_HALF_EVEN, "down": _decimal.ROUND_DOWN}
    with _decimal.localcontext() as context:
        context.prec = 100
        exact = _decimal.Decimal(value).scaleb(to_scale - from_scale)
        result = int(exact.quantize(_decimal.Decimal(1), rounding=modes[rounding]))
    if not _INT64_MIN <= result <= _INT64_MAX:
        return 0, "OVERFLOW"
    return result, "OK"


def naive_scan_decimals(text, scale, capacity):
    """(values, status name, error position), as kernels.fixed.scan_decimals: a regex and Decimal."""
    values = []
    for match in _NUMBER_RUN.finditer(text):
        if len(values) == capacity:
            return values, "FULL", match.start()
        value, status = naive_parse_decimal(match.group(), scale)
        if status != "OK":
            return values, status, match.start()
        values.append(value)
    return values, "OK", -1


# ---------------------------------------------------------------- latency statistics
# (kernels/hist.py, kernels/window.py, kernels/summary.py)


def hdr_bucket_width(value, lowest, significant_digits):
    """Width of the HdrHistogram bucket holding ``value``: the unit ``2**floor(log2(lowest))``,
    doubled for each power of two that the value lies above the first bucket's top."""
    unit = 1
    while unit * 2 <= lowest:
        unit *= 2
    sub_buckets = 1
    while sub_buckets < 2 * 10**significant_digits:
        sub_buckets *= 2
    width = unit
    top = sub_buckets * unit  # first value the current width cannot resolve
    while value >= top:
        width *= 2
        top *= 2
    return width


def hdr_equivalent_range(value, lowest, significant_digits):
    """(lowest, highest) value recorded in the same bucket as ``value``."""
    width = hdr_bucket_width(value, lowest, significant_digits)
    bottom = value // width * width
    return bottom, bottom + width - 1


def hdr_value_at_percentile(values, percentile, lowest, significant_digits):
    """HdrHistogram's getValueAtPercentile from the raw values: the sample of rank
    max(1, round-half-up(p * n / 100)) in sorted order, moved to the top of its
    bucket (the bottom for p == 0)."""
    ordered = sorted(values)
    rank = max(1, int(percentile * len(ordered) / 100 + 0.5))
    bottom, top = hdr_equivalent_range(ordered[min(rank, len(ordered)) - 1], lowest,
                                       significant_digits)
    return bottom if percentile == 0 else top


def coordinated_omission_values(value, expected_interval):
    """The values HdrHistogram's recordValueWithExpectedInterval records, one by one."""
    recorded = [value]
    missing = value - expected_interval
    while expected_interval > 0 and missing >= expected_interval:
        recorded.append(missing)
        missing -= expected_interval
    return recorded


def zigzag_leb128(words):
    """HdrHistogram's V2 count encoding of signed 64-bit words, one bit at a time."""
    out = bytearray()
    for word in words:
        unsigned = (word * 2) if word >= 0 else (-word * 2 - 1)
        for byte_number in range(9):
            if byte_number == 8:
                out.append(unsigned)  # the ninth byte holds 8 bits
                break
            if unsigned < 128:
                out.append(unsigned)
                break
            out.append(unsigned % 128 + 128)
            unsigned //= 128
    return bytes(out)


def hdr_count_words(counts):
    """Counts as V2 words: a run of two or more zeros becomes minus its length."""
    words = []
    index = 0
    while index < len(counts):
        run = 0
        while index + run < len(counts) and counts[index + run] == 0:
            run += 1
        if run >= 2:
            words.append(-run)
            index += run
        else:
            words.append(int(counts[index]))
            index += 1
    return words


def nearest_quantile(samples, q):
    """numpy's method='nearest': sorted sample at round-half-even((n - 1) * q)."""
    ordered = sorted(samples)
    return ordered[round((len(ordered) - 1) * q)]


def run_summary(operations):
    """Summary of ``(timestamp_ns, latency_ns, failed)`` operations, the obvious way."""
    timestamps = [timestamp for timestamp, _, _ in operations]
    latencies = [latency for _, latency, failed in operations if not failed]
    errors = sum(1 for _, _, failed in operations if failed)
    duration_ns = max(timestamps) - min(timestamps) if timestamps else 0
    return {
        "count": len(operations),
        "errors": errors,
        "error_rate": errors / len(operations) if operations else float("nan"),
        "duration_s": duration_ns / 1e9,
        "throughput_per_s": len(operations) / (duration_ns / 1e9) if duration_ns else float("nan"),
        "latency_mean_ns": sum(latencies) / len(latencies) if latencies else float("nan"),
        "latency_min_ns": min(latencies) if latencies else None,
        "latency_max_ns": max(latencies) if latencies else None,
    }


# ---------------------------------------------------------------------------
# Order books (kernels.book, kernels.orders, kernels.replay): dicts of levels
# and of orders, with no capacity limit, and the same sequence rules.

class NaiveBook:
    """An L2 + L3 book per symbol: ``levels[symbol][side]`` maps price -> quantity."""

    BID, ASK = 1, -1

    def __init__(self):
        self.levels = {}
        self.orders = {}        # (symbol, order_id) -> [side, price, quantity]
        self.sequences = {}
        self.trading_status = {}
        self.max_levels = {}    # symbol -> levels kept per side after each message
        self.stale = self.gaps = self.unknown_orders = 0

    def side(self, symbol, side):
        return self.levels.setdefault(symbol, {1: {}, -1: {}})[side]

    # L2
    def set_level(self, symbol, side, price, quantity):
        if quantity == 0:
            self.side(symbol, side).pop(price, None)
        else:
            self.side(symbol, side)[price] = quantity

    def change_level(self, symbol, side, price, delta):
        total = self.side(symbol, side).get(price, 0) + delta
        self.set_level(symbol, side, price, max(total, 0))

    def sorted_levels(self, symbol, side):
        """``[(price, quantity)]`` best first."""
        return sorted(self.side(symbol, side).items(), reverse=(side == self.BID))

    def best(self, symbol, side):
        levels = self.sorted_levels(symbol, side)
        return levels[0] if levels else None

    def truncate(self, symbol, side, keep):
        """Keep the best ``keep`` levels of ``side`` (0: of each); return how many went."""
        deleted = 0
        for one_side in ((1, -1) if side == 0 else (side,)):
            for price, _ in self.sorted_levels(symbol, one_side)[keep:]:
                del self.side(symbol, one_side)[price]
                deleted += 1
        return deleted

    def clear(self, symbol, side):
        for one_side in ((1, -1) if side == 0 else (side,)):
            self.side(symbol, one_side).clear()
            for key in [key for key, order in self.orders.items()
                        if key[0] == symbol and order[0] == one_side]:
                del self.orders[key]

    # L3
    def add_order(self, symbol, order_id, side, price, quantity):
        assert (symbol, order_id) not in self.orders
        self.orders[(symbol, order_id)] = [side, price, quantity]
        self.change_level(symbol, side, price, quantity)

    def reduce_order(self, symbol, order_id, side, price, quantity, whole):
        order = self.orders.get((symbol, order_id))
        if order is None:
            self.unknown_orders += 1
            if side in (1, -1):
                self.change_level(symbol, side, price, -quantity)
            return
        from_level = order[2] if whole and quantity == 0 else quantity
        order[2] = 0 if whole else max(order[2] - quantity, 0)
        if order[2] == 0:
            del self.orders[(symbol, order_id)]
        self.change_level(symbol, order[0], order[1], -from_level)

    # Events: kinds and sequence rules of kernels.replay.apply_event.
    def apply(self, event):
        kind, symbol, side = int(event["kind"]), int(event["symbol"]), int(event["side"])
        price, quantity, sequence = int(event["price"]), int(event["quantity"]), int(event["sequence"])
        batch_end = bool(event["flags"] & 1)
        # KIND_SEQUENCE (13) changes nothing but runs these rules.
        checked = sequence != 0 and not (event["flags"] & 2) and kind in (1, 2, 3, 4, 5, 8, 13)
        gap = False
        if checked:
            held = self.sequences.get(symbol, 0)
            if sequence <= held:
                self.stale += batch_end
                return "stale"
            gap = int(event["prev_sequence"]) > held
        order_id = int(event["order_id"])
        if kind == 1:
            self.set_level(symbol, side, price, quantity)
        elif kind == 2:
            self.add_order(symbol, order_id, side, price, quantity)
        elif kind in (3, 5):
            self.reduce_order(symbol, order_id, side, price, quantity, whole=False)
        elif kind == 4:
            self.reduce_order(symbol, order_id, side, price, quantity, whole=True)
        elif kind == 8:
            self.clear(symbol, side)
        elif kind == 9:
            self.clear(symbol, 0)
            self.sequences[symbol] = 0
        elif kind == 10:
            self.sequences[symbol] = sequence
        elif kind == 11:
            self.trading_status[symbol] = quantity
        if batch_end and self.max_levels.get(symbol, 0) > 0:
            self.truncate(symbol, 0, self.max_levels[symbol])
        if checked and batch_end:
            self.sequences[symbol] = sequence
            self.gaps += gap
        return "gap" if gap else "ok"

    # Queries
    def depth_to_price(self, symbol, side, price):
        return sum(quantity for level, quantity in self.side(symbol, side).items()
                   if (level >= price if side == self.BID else level <= price))

    def quantity_to_depth(self, symbol, side, n_levels):
        return sum(quantity for _, quantity in self.sorted_levels(symbol, side)[:n_levels])

    def fill_cost(self, symbol, side, quantity):
        """``(filled, cost)`` walking ``side`` best first; cost exact (Python ints)."""
        filled = cost = 0
        for price, available in self.sorted_levels(symbol, side):
            take = min(quantity - filled, available)
            if take <= 0:
                break
            filled += take
            cost += price * take
        return filled, cost


def naive_make_events(message=None, **columns):
    """kernels.events.make_events as a loop: one dict per event, FLAG_BATCH_END (1)
    on the last event of each run of equal message ids (of all, without ids)."""
    count = max([len(value) for value in columns.values() if hasattr(value, "__len__")]
                + ([len(message)] if message is not None else []) + [1])
    events = []
    for index in range(count):
        event = {name: int(value[index] if hasattr(value, "__len__") else value)
                 for name, value in columns.items()}
        last = index == count - 1
        if message is not None and not last:
            last = message[index] != message[index + 1]
        event["flags"] = event.get("flags", 0) | (1 if last else 0)
        events.append(event)
    return events


# ---------------------------------------------------------------------------
# Feeds and `ringbook check` (engine/feeds, engine/check.py): plain Python
# readers with csv, json and decimal, and the check's book as sorted dicts.

import csv as _csv  # noqa: E402
import gzip as _gzip  # noqa: E402
import json as _json  # noqa: E402


def _feed_lines(path):
    """(1-based line number, text) of the non-blank lines of a text file, gunzipped if needed."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":
        data = _gzip.decompress(data)
    return [(number, line.rstrip("\r")) for number, line in enumerate(data.decode().split("\n"), 1)
            if line.rstrip("\r")]


def _fixed(text, scale):
    """An exact decimal string as an int at ``scale`` decimals (raises if inexact)."""
    value = _decimal.Decimal(text).scaleb(scale)
    if value != value.to_integral_value():
        raise ValueError(f"{text} has more than {scale} decimals")
    return int(value)


def lobster_rows(path):
    """Data rows of a LOBSTER csv as (line number, [fields]), header skipped."""
    rows = [(number, line.split(",")) for number, line in _feed_lines(path)]
    if rows and any(character.isalpha() for character in ",".join(rows[0][1])):
        rows = rows[1:]
    return rows


def lobster_events(path, midnight_ns=0):
    """LOBSTER messages as event dicts (see engine.feeds.lobster for the mapping)."""
    kinds = {1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 11}
    halt_status = {-1: 2, 0: 3, 1: 1}
    events = []
    for number, (time, kind, order_id, size, price, direction) in lobster_rows(path):
        kind, price, direction = int(kind), int(price), int(direction)
        event = {"line": number, "exchange_ns": midnight_ns + _fixed(time, 9), "kind": kinds[kind],
                 "order_id": int(order_id), "quantity": int(size), "price": price,
                 "side": 1 if direction == 1 else -1, "flags": 1}
        if kind == 7:
            event.update(quantity=halt_status[price], price=0, side=0)
        if kind == 6:
            event["side"] = 0
        events.append(event)
    return events


def lobster_check(message_path, orderbook_path):
    """The LOBSTER check of engine/check.py, with dicts: (checked, mismatches, unknown_orders).

    Seeds the levels before message 0 (row 0 with message 0 undone); after
    each message compares the levels at or better than the previous row's
    worst level (when that row was full) and takes the rest from the row;
    an L3 message's size is the truth for the order it names.
    """
    messages = [[int(field) if index else field for index, field in enumerate(fields)]
                for _, fields in lobster_rows(message_path)]
    rows = [[int(field) for field in fields] for _, fields in lobster_rows(orderbook_path)]
    levels = len(rows[0]) // 4

    def shown(row, side):
        offset = 2 if side == 1 else 0
        return [(row[4 * level + offset], row[4 * level + offset + 1]) for level in range(levels)
                if row[4 * level + offset + 1] > 0]

    book = {side: dict(shown(rows[0], side)) for side in (1, -1)}
    orders = {}
    unknown = 0

    def change(side, price, delta):
        quantity = book[side].get(price, 0) + delta
        if quantity > 0:
            book[side][price] = quantity
        else:
            book[side].pop(price, None)

    def apply(message):
        nonlocal unknown
        _, kind, order_id, size, price, direction = message
        if kind == 1:
            orders[order_id] = [direction, price, size]
            change(direction, price, size)
        elif kind in (2, 3, 4):
            order = orders.get(order_id)
            if order is None:
                unknown += 1
                change(direction, price, -size)
                return
            order[2] -= size
            if order[2] <= 0:
                del orders[order_id]
            change(order[0], order[1], -size)

    _, kind, _, size, price, direction = messages[0]
    if kind == 1:
        change(direction, price, -size)
    elif kind in (2, 3, 4):
        change(direction, price, size)

    def at_or_better(side, price, limit):
        return price >= limit if side == 1 else price <= limit

    mismatches = 0
    previous = None
    for message, row in zip(messages, rows):
        apply(message)
        row_matches = True
        for side in (1, -1):
            expected = shown(row, side)
            window = shown(previous, side) if previous is not None else []
            limit = window[-1][0] if len(window) == levels else None

            def known(price):
                return limit is None or at_or_better(side, price, limit)

            held = sorted(book[side].items(), key=lambda level: -level[0] * side)[:levels]
            if [level for level in held if known(level[0])] != [level for level in expected
                                                                 if known(level[0])]:
                row_matches = False
                book[side] = dict(expected)
            elif limit is not None:
                book[side] = {price: quantity for price, quantity in book[side].items() if known(price)}
                book[side].update((price, quantity) for price, quantity in expected if not known(price))
        mismatches += not row_matches
        previous = row
    return len(rows), mismatches, unknown


def gather_messages(events, messages, order, symbols, numbers, start_column, count_column):
    """The events (as tuples) of messages ``order`` (rows of ``messages``), in that order, each
    with its message's symbol; and each one's line (its message's number)."""
    symbol_field = events.dtype.names.index("symbol")
    gathered, lines = [], []
    for message in order.tolist():
        start, count = int(messages[message, start_column]), int(messages[message, count_column])
        for index in range(start, start + count):
            event = list(events[index].item())
            event[symbol_field] = int(symbols[message])
            gathered.append(tuple(event))
            lines.append(int(numbers[message]))
    return gathered, lines


def binance_events(path):
    """A Binance capture's events in file order (no sync), as dicts (see engine.feeds.binance).

    A diff with no levels is one KIND_SEQUENCE event: it moves the sequence on.
    """
    events = []
    for number, line in _feed_lines(path):
        local, text = line.split(" ", 1)
        document = _json.loads(text)
        data = document.get("data", document)

        def event(**fields):
            base = {"line": number, "local_ns": int(local), "exchange_ns": 0, "price": 0,
                    "quantity": 0, "order_id": 0, "sequence": 0, "prev_sequence": 0, "side": 0,
                    "flags": 0}
            base.update(fields)
            events.append(base)

        if data.get("e") == "depthUpdate":
            previous = data["pu"] if "pu" in data else data["U"] - 1
            common = dict(exchange_ns=data["E"] * 10**6, sequence=data["u"], prev_sequence=previous)
            start = len(events)
            for side, key in ((1, "b"), (-1, "a")):
                for price, quantity in data[key]:
                    event(kind=1, price=_fixed(price, 8), quantity=_fixed(quantity, 8), side=side,
                          **common)
            if len(events) == start:
                event(kind=13, **common)
            events[-1]["flags"] = 1
        elif "lastUpdateId" in data:
            event(kind=9, flags=2)
            for side, key in ((1, "bids"), (-1, "asks")):
                for price, quantity in data[key]:
                    event(kind=1, price=_fixed(price, 8), quantity=_fixed(quantity, 8), side=side,
                          flags=2)
            event(kind=10, sequence=data["lastUpdateId"], flags=3)
        elif data.get("e") == "trade":
            event(kind=7, exchange_ns=data["T"] * 10**6, price=_fixed(data["p"], 8),
                  quantity=_fixed(data["q"], 8), order_id=data["t"], side=-1 if data["m"] else 1,
                  flags=1)
        elif "B" in data and "A" in data:
            exchange_ns = data.get("E", 0) * 10**6
            event(kind=12, exchange_ns=exchange_ns, price=_fixed(data["b"], 8),
                  quantity=_fixed(data["B"], 8), sequence=data["u"], side=1)
            event(kind=12, exchange_ns=exchange_ns, price=_fixed(data["a"], 8),
                  quantity=_fixed(data["A"], 8), sequence=data["u"], side=-1, flags=1)
    return events


def binance_check(path):
    """Binance's documented sync and the bookTicker check, with dicts: (checked, mismatches, gaps).

    One symbol. Diffs before the snapshot are buffered; diffs with
    ``u <= lastUpdateId`` dropped; the first applied must satisfy
    ``U <= lastUpdateId + 1 <= u``, later ones ``U == previous u + 1`` (else a
    gap, applied anyway). A ticker is checked when the book's last applied
    ``u`` equals its ``u``, at whatever point of the file that happens.
    """
    messages = []
    for _, line in _feed_lines(path):
        document = _json.loads(line.split(" ", 1)[1])
        messages.append(document.get("data", document))
    tickers = {}
    for data in messages:
        if "B" in data and "A" in data and "e" not in data or data.get("e") == "bookTicker":
            tickers.setdefault(data["u"], []).append(data)
    book = {1: {}, -1: {}}
    last = None
    first_after_snapshot = False
    checked = mismatches = gaps = 0
    buffered = []

    def apply(data):
        nonlocal last, first_after_snapshot, checked, mismatches, gaps
        if data["u"] <= last:
            return
        if first_after_snapshot:
            if not data["U"] <= last + 1 <= data["u"]:
                gaps += 1
            first_after_snapshot = False
        elif data.get("pu", data["U"] - 1) != last:
            gaps += 1
        for side, key in ((1, "b"), (-1, "a")):
            for price, quantity in data[key]:
                price, quantity = _fixed(price, 8), _fixed(quantity, 8)
                if quantity:
                    book[side][price] = quantity
                else:
                    book[side].pop(price, None)
        last = data["u"]
        for ticker in tickers.pop(last, []):
            checked += 1
            best_bid = max(book[1]) if book[1] else None
            best_ask = min(book[-1]) if book[-1] else None
            found = (best_bid, book[1].get(best_bid), best_ask, book[-1].get(best_ask))
            expected = (_fixed(ticker["b"], 8), _fixed(ticker["B"], 8), _fixed(ticker["a"], 8),
                        _fixed(ticker["A"], 8))
            mismatches += found != expected

    for data in messages:
        if "lastUpdateId" in data:
            book = {1: {_fixed(p, 8): _fixed(q, 8) for p, q in data["bids"] if _fixed(q, 8)},
                    -1: {_fixed(p, 8): _fixed(q, 8) for p, q in data["asks"] if _fixed(q, 8)}}
            last = data["lastUpdateId"]
            first_after_snapshot = True
            for diff in buffered:
                apply(diff)
            buffered = []
        elif data.get("e") == "depthUpdate":
            if last is None:
                buffered.append(data)
            else:
                apply(data)
    return checked, mismatches, gaps


# --- ring slots (kernels/ring.py) -------------------------------------------

class NaiveRing:
    """A ring as a list of messages and one read position per consumer.

    The producer may write while the slowest consumer is fewer than
    ``slot_count`` messages behind; each consumer reads every message in order.
    """

    def __init__(self, slot_count, payload_capacity, consumers=1):
        self.slot_count = slot_count
        self.payload_capacity = payload_capacity
        self.messages = []
        self.positions = [0] * consumers

    def write(self, payload):
        """True if written, False if full; ValueError if too large."""
        if len(payload) > self.payload_capacity:
            raise ValueError("too large")
        if len(self.messages) - min(self.positions) >= self.slot_count:
            return False
        self.messages.append(bytes(payload))
        return True

    def read(self, consumer):
        """The next message for ``consumer``, or None."""
        position = self.positions[consumer]
        if position == len(self.messages):
            return None
        self.positions[consumer] += 1
        return self.messages[position]

    def pending(self, consumer):
        return len(self.messages) - self.positions[consumer]

    def free_slots(self):
        return self.slot_count - (len(self.messages) - min(self.positions))


# ---------------------------------------------------------------- journal (kernels/crc32c.py, kernels/journal.py)

import struct as _struct  # noqa: E402


def naive_crc32c(data, seed=0):
    """CRC32C bit by bit: reflected polynomial 0x82F63B78, initial and final value inverted."""
    state = seed ^ 0xFFFFFFFF
    for byte in bytes(data):
        state ^= byte
        for _ in range(8):
            state = (state >> 1) ^ (0x82F63B78 if state & 1 else 0)
    return state ^ 0xFFFFFFFF


def naive_record(payload, sequence, receive_tsc, receive_ns, kind, flags):
    """The bytes of one journal record, by ``struct`` (see kernels/journal.py's layout)."""
    payload = bytes(payload)
    padding = b"\0" * (-len(payload) % 8)
    rest = _struct.pack("<qqqHHI", sequence, receive_tsc, receive_ns, kind, 0, flags) + payload + padding
    checked = _struct.pack("<I", len(payload)) + rest
    return _struct.pack("<I", naive_crc32c(checked)) + checked


def naive_seek(records, sequence=None, time=None):
    """Sequence of the first record with sequence >= ``sequence`` or receive ns >= ``time``,
    by a linear scan of ``(sequence, receive_ns)`` pairs; one past the last when none."""
    for found, receive_ns in records:
        if (sequence is not None and found >= sequence) or (time is not None and receive_ns >= time):
            return found
    return records[-1][0] + 1 if records else 0


# ---------------------------------------------------------------------------
# Book snapshots at interval boundaries (kernels/snapshots.py): replay message
# by message, and for each boundary take the book before the first message
# whose first event is later than the boundary.

def snapshots(events, symbol, interval, levels):
    """``[(boundary, bids, asks)]`` with ``bids``/``asks`` lists of (price, quantity), best first.

    A message is a run of events ending with FLAG_BATCH_END. Boundaries run
    from the first multiple of ``interval`` at or after the first non-zero
    exchange time to the last at or before the latest one; at boundary ``b`` the
    book holds every message before the first message whose first event has a
    time later than ``b``.
    """
    messages, current = [], []
    for event in events:
        current.append(event)
        if event["flags"] & 1:
            messages.append(current)
            current = []
    if current:
        messages.append(current)
    times = [int(event["exchange_ns"]) for event in events if event["exchange_ns"] > 0]
    if not times:
        return []
    first = -(-times[0] // interval) * interval
    last = max(times) // interval * interval
    book = NaiveBook()
    applied = 0
    rows = []
    for boundary in range(first, last + 1, interval):
        while applied < len(messages) and not int(messages[applied][0]["exchange_ns"]) > boundary:
            for event in messages[applied]:
                book.apply(event)
            applied += 1
        rows.append((boundary, book.sorted_levels(symbol, 1)[:levels],
                     book.sorted_levels(symbol, -1)[:levels]))
    return rows


def published_snapshots(events, row_of_event, bid_prices, bid_sizes, ask_prices, ask_sizes, interval, levels):
    """:func:`snapshots` of an exchange that publishes its best levels after each event: no book,
    the row of the last event with one (``row_of_event`` within the rows) of the messages
    applied, its levels up to the first empty one (size 0)."""
    times = [int(event["exchange_ns"]) for event in events if event["exchange_ns"] > 0]
    if not times:
        return []
    first = -(-times[0] // interval) * interval
    last = max(times) // interval * interval
    current, applied, rows = -1, 0, []

    def shown(prices, sizes):
        if current < 0:
            return []
        found = []
        for price, size in zip(prices[current].tolist(), sizes[current].tolist()):
            if size <= 0:
                break
            found.append((price, size))
        return found[:levels]

    for boundary in range(first, last + 1, interval):
        # Every message whose first event is not later than the boundary, whole.
        while applied < len(events) and not int(events[applied]["exchange_ns"]) > boundary:
            while True:
                if 0 <= row_of_event[applied] < len(bid_prices):
                    current = int(row_of_event[applied])
                applied += 1
                if events[applied - 1]["flags"] & 1 or applied == len(events):
                    break
        rows.append((boundary, shown(bid_prices, bid_sizes), shown(ask_prices, ask_sizes)))
    return rows


def snapshot_csv(exchange, symbol, price_scale, size_scale, times, last_local_ns, bid_prices, bid_quantities,
                 ask_prices, ask_quantities, no_price):
    """The CSV text of snapshot arrays (engine/snapshots.py's tardis.dev layout), a row at a time with
    Decimal: times in µs (the local time is the boundary when unknown), numbers without trailing
    zeros, both fields of an absent level empty."""
    def number(value, scale):
        text = format(_decimal.Decimal(int(value)).scaleb(-scale), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text

    columns = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for level in range(bid_prices.shape[1]):
        columns += [f"asks[{level}].price", f"asks[{level}].amount", f"bids[{level}].price",
                    f"bids[{level}].amount"]
    lines = [",".join(columns)]
    for row in range(len(times)):
        boundary = int(times[row]) // 1000
        local = int(last_local_ns[row]) // 1000 if last_local_ns[row] > 0 else boundary
        fields = [exchange, symbol, str(boundary), str(local)]
        for level in range(len(bid_prices[row])):
            for prices, quantities in ((ask_prices, ask_quantities), (bid_prices, bid_quantities)):
                present = prices[row][level] != no_price
                fields += [number(prices[row][level], price_scale) if present else "",
                           number(quantities[row][level], size_scale) if present else ""]
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# tardis.dev incremental_book_L2 (engine/feeds/tardis.py): csv and Decimal, a
# Python loop over the rows, the snapshot runs tracked per symbol.

def tardis_events(path):
    """Event dicts (with ``line``) of a tardis incremental_book_L2 file, and the scales."""
    opener = _gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rt", newline="") as file:
        rows = list(_csv.reader(file))
    body = [(number, row) for number, row in enumerate(rows[1:], start=2) if row]

    def decimals(text):
        return len(text.split(".")[1]) if "." in text else 0

    price_scale = max((decimals(row[6]) for _, row in body), default=0)
    size_scale = max((decimals(row[7]) for _, row in body), default=0)
    ids, previous, events = {}, {}, []
    for position, (number, row) in enumerate(body):
        exchange, name, timestamp, local, is_snapshot, side, price, amount = row
        symbol = ids.setdefault(name, len(ids))
        snapshot = is_snapshot == "true"
        base = dict(exchange_ns=int(timestamp) * 1000, local_ns=int(local) * 1000, symbol=symbol, line=number)
        if snapshot and not previous.get(symbol, False):
            events.append(dict(base, kind=9, side=0, price=0, quantity=0, flags=2))
        previous[symbol] = snapshot
        later = [other for _, other in body[position + 1:] if other[1] == name]
        following = later[0] if later else None
        same_message = following is not None and following[2:5] == row[2:5]
        ends_run = snapshot and (following is None or following[4] != "true")
        flags = 2 if snapshot else (0 if same_message else 1)
        events.append(dict(base, kind=1, side=1 if side == "bid" else -1,
                           price=_fixed(price, price_scale), quantity=_fixed(amount, size_scale), flags=flags))
        if ends_run:
            events.append(dict(base, kind=10, side=0, price=0, quantity=0, flags=3))
    return events, price_scale, size_scale


def tardis_row_problem(text, price_scale, size_scale):
    """The field a tardis incremental_book_L2 row is wrong in, checked in the reader's order
    (``"fields"`` for a count other than 8); None for a good row."""
    fields = text.split(",")
    if len(fields) != 8:
        return "fields"
    _, symbol, timestamp, local, is_snapshot, side, price, amount = fields
    if not symbol:
        return "symbol"
    for name, value in (("timestamp", timestamp), ("local_timestamp", local)):
        parsed, status = naive_parse_decimal(value, 0)
        if status != "OK" or not 0 <= parsed <= _INT64_MAX // 1000:
            return name
    if is_snapshot not in ("true", "false"):
        return "is_snapshot"
    if side not in ("bid", "ask"):
        return "side"
    if naive_parse_decimal(price, price_scale)[1] != "OK":
        return "price"
    parsed, status = naive_parse_decimal(amount, size_scale)
    return "amount" if status != "OK" or parsed < 0 else None


# ---------------------------------------------------------------------------
# Reconciling a side with a published row of its best levels
# (kernels/snapshots.py reconcile_side): a dict of price -> quantity.

def reconcile_side(levels, side, row_prices, row_sizes, previous_prices, previous_sizes, has_previous):
    """The side's new ``{price: quantity}`` and whether the previous row's window agreed."""
    def at_or_better(price, limit):
        return price >= limit if side == 1 else price <= limit

    depth = len(row_prices)
    shown = next((k for k in range(depth) if row_sizes[k] <= 0), depth)
    row = {int(row_prices[k]): int(row_sizes[k]) for k in range(shown)}
    windowed = has_previous and previous_sizes[depth - 1] > 0
    limit = int(previous_prices[depth - 1])
    best = sorted(levels.items(), reverse=side == 1)[:depth]
    # Level by level, best first, up to the first level that neither has within the window
    # (for a row in order: the book's levels within the window equal the row's).
    book_side = [level if not windowed or at_or_better(level[0], limit) else None for level in best]
    row_side = [(int(row_prices[k]), int(row_sizes[k])) if not windowed or at_or_better(row_prices[k], limit)
                else None for k in range(shown)]
    book_side += [None] * (depth - len(book_side))
    row_side += [None] * (depth - len(row_side))
    compared = next((k for k in range(depth) if book_side[k] is None and row_side[k] is None), depth)
    matched = book_side[:compared] == row_side[:compared]
    if matched and not windowed:
        return dict(levels), True
    kept = {price: quantity for price, quantity in levels.items() if matched and at_or_better(price, limit)}
    kept.update({price: quantity for price, quantity in row.items() if not matched or not at_or_better(price, limit)})
    return kept, matched


def naive_frame_many(payloads, first_sequence, receive_tsc, receive_ns, kinds, flags, index_every, base=0):
    """Records framed one after another from ``base`` (their bytes) and the sparse index they get:
    ``(sequence, file offset, greatest receive ns before it)`` for every ``index_every``-th record."""
    out = bytearray()
    index = []
    max_ns = -(1 << 63)
    for number, payload in enumerate(payloads):
        sequence = first_sequence + number
        if number % index_every == 0:
            index.append((sequence, base + len(out), max_ns))
        out += naive_record(payload, sequence, receive_tsc[number], receive_ns[number], kinds[number],
                            flags[number])
        max_ns = max(max_ns, receive_ns[number])
    return bytes(out), index
