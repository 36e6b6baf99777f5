"""Synthetic markets written in the exchanges' own file formats.

For examples, notebooks and tests on a machine without real data: a simulated
order book writes a LOBSTER message/orderbook pair, or a Binance capture, that
the readers and ``ringbook check`` accept, and that the check verifies with
no mismatch (the files are consistent by construction).
"""

import gzip
from pathlib import Path

import numpy as np

from ringbook.engine.feeds.lobster import EMPTY_ASK_PRICE, EMPTY_BID_PRICE


class _RestingIds:
    """The ids of resting orders, whose k-th smallest (the k-th in the order they were added,
    as ids grow) is found in log time: a Fenwick tree of counts over the ids. Picking from a
    list of them made a file's time grow with the square of its messages."""

    def __init__(self, largest_id):
        self.counts = [0] * (largest_id + 1)
        self.top_step = 1 << largest_id.bit_length()

    def change(self, order_id, delta):
        while order_id < len(self.counts):
            self.counts[order_id] += delta
            order_id += order_id & -order_id

    def kth(self, k):
        """The id of rank ``k`` (from 0) among those held."""
        position, step = 0, self.top_step
        while step:
            if position + step < len(self.counts) and self.counts[position + step] <= k:
                position += step
                k -= self.counts[position]
            step >>= 1
        return position + 1


def write_lobster(directory, messages=2000, levels=5, seed=0, header=False, ticker="SYNT",
                  mid_price=5850000):
    """Write a LOBSTER message and orderbook file pair from a simulated order book.

    Orders resting before the file starts are never named in it (as in real
    files), so the messages refer to unknown orders. Prices are in LOBSTER's
    units (dollars times 10000) on a one-cent grid around ``mid_price``.

    Returns
    -------
    message_path, orderbook_path : pathlib.Path
        ``TICKER_2012-06-21_34200000_57600000_{message,orderbook}_LEVELS.csv``.
    """
    rng = np.random.default_rng(seed)
    orders = {}
    live = _RestingIds(40 + messages)
    book = {1: {}, -1: {}}
    next_id = 1

    def add(side, price, size):
        nonlocal next_id
        orders[next_id] = [side, price, size]
        live.change(next_id, 1)
        book[side][price] = book[side].get(price, 0) + size
        next_id += 1
        return next_id - 1

    def remove(order_id, size):
        side, price, resting = orders[order_id]
        book[side][price] -= size
        if book[side][price] == 0:
            del book[side][price]
        if size == resting:
            del orders[order_id]
            live.change(order_id, -1)
        else:
            orders[order_id][2] -= size

    def random_order():
        side = int(rng.choice([1, -1]))
        return side, mid_price - side * 100 * int(rng.integers(1, 12)), int(rng.integers(1, 20)) * 10

    for _ in range(40):  # the book before the file starts
        add(*random_order())
    message_lines, row_lines = [], []
    time_ns = 34200 * 10**9
    for _ in range(messages):
        time_ns += int(rng.integers(1, 10**8))
        if rng.random() < 0.45 or len(orders) < 5:
            side, price, size = random_order()
            order_id = add(side, price, size)
            kind = 1
        else:
            order_id = live.kth(int(rng.integers(0, len(orders))))   # as rng.choice(list(orders))
            side, price, resting = orders[order_id]
            kind = int(rng.choice([2, 3, 4]))
            size = resting if kind == 3 else int(rng.integers(1, resting + 1))
            remove(order_id, size)
        message_lines.append(f"{time_ns // 10**9}.{time_ns % 10**9:09d},{kind},{order_id},{size},"
                             f"{price},{side}")
        bids = sorted(book[1].items(), reverse=True)[:levels]
        asks = sorted(book[-1].items())[:levels]
        fields = []
        for level in range(levels):
            fields += list(asks[level]) if level < len(asks) else [EMPTY_ASK_PRICE, 0]
            fields += list(bids[level]) if level < len(bids) else [EMPTY_BID_PRICE, 0]
        row_lines.append(",".join(map(str, fields)))
    directory = Path(directory)
    name = f"{ticker}_2012-06-21_34200000_57600000_{{}}_{levels}.csv"
    message_path = directory / name.format("message")
    orderbook_path = directory / name.format("orderbook")
    message_path.write_text(("Time,Type,OrderId,Size,Price,Direction\n" if header else "")
                            + "\n".join(message_lines) + "\n")
    orderbook_path.write_text(
        (",".join(f"{column}{level + 1}" for level in range(levels)
                  for column in ("AskPrice", "AskSize", "BidPrice", "BidSize")) + "\n" if header else "")
        + "\n".join(row_lines) + "\n")
    return message_path, orderbook_path


def write_binance_capture(path, diffs=2000, seed=0, symbol="SYNTUSDT", start_ns=1723161253937085768):
    """Write a gzip Binance spot capture (``<local ns> <json>``) from a simulated book.

    A REST snapshot arrives after a few diffs (which the sync procedure holds
    back); each diff changes a few levels near the touch and is followed by a
    ``bookTicker`` at its update id, with trades in between.

    Returns
    -------
    pathlib.Path
    """
    rng = np.random.default_rng(seed)
    book = {1: {}, -1: {}}
    mid = 6_000_000  # cents: 60000.00

    def text(value, decimals=2):
        return f"{value / 10**decimals:.{decimals}f}" + "0" * (8 - decimals)

    for offset in range(1, 51):
        book[1][mid - offset] = int(rng.integers(1, 10**6))
        book[-1][mid + offset] = int(rng.integers(1, 10**6))
    update_id = 1000
    time_ns = start_ns
    lines = []

    def line(payload):
        nonlocal time_ns
        time_ns += int(rng.integers(10**5, 5 * 10**7))
        lines.append(f"{time_ns} {payload}")

    def levels(side):
        return ",".join(f'["{text(price)}","{text(quantity, 5)}"]'
                        for price, quantity in sorted(book[side].items(), key=lambda level: -level[0] * side))

    snapshot_at = 3
    snapshot = None
    for step in range(diffs):
        first = update_id + 1
        update_id += int(rng.integers(1, 6))
        changes = {1: [], -1: []}
        for _ in range(int(rng.integers(1, 5))):
            side = int(rng.choice([1, -1]))
            best = max(book[1]) if side == 1 else min(book[-1])
            price = best - side * int(rng.integers(0, 6))
            other_best = min(book[-1]) if side == 1 else max(book[1])
            if (price - other_best) * side >= 0:
                continue
            quantity = 0 if rng.random() < 0.3 and len(book[side]) > 5 else int(rng.integers(1, 10**6))
            if quantity:
                book[side][price] = quantity
            else:
                book[side].pop(price, None)
            changes[side].append(f'["{text(price)}","{text(quantity, 5)}"]')
        if step == snapshot_at:
            snapshot = ('{"lastUpdateId":%d,"bids":[%s],"asks":[%s]}' % (update_id, levels(1), levels(-1)))
        line('{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d,'
             '"b":[%s],"a":[%s]}}' % (symbol.lower(), time_ns // 10**6, symbol, first, update_id,
                                      ",".join(changes[1]), ",".join(changes[-1])))
        if step == snapshot_at + 2:
            line(snapshot)  # arrives late: the diffs before it are held back
        best_bid, best_ask = max(book[1]), min(book[-1])
        line('{"stream":"%s@bookTicker","data":{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}}'
             % (symbol.lower(), update_id, symbol, text(best_bid), text(book[1][best_bid], 5),
                text(best_ask), text(book[-1][best_ask], 5)))
        if rng.random() < 0.3:
            maker = bool(rng.random() < 0.5)
            line('{"stream":"%s@trade","data":{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s",'
                 '"T":%d,"m":%s,"M":true}}' % (symbol.lower(), time_ns // 10**6, symbol, step,
                                               text(best_bid if maker else best_ask),
                                               text(int(rng.integers(1, 10**4)), 5), time_ns // 10**6,
                                               "true" if maker else "false"))
    path = Path(path)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def write_tardis_incremental(path, rows=100_000, seed=0, exchange="binance-futures", symbol="BTCUSDT",
                             start_us=1_723_161_600_000_000):
    """Write a tardis.dev ``incremental_book_L2`` file (gzip when ``path`` ends in ``.gz``).

    A snapshot of 500 levels a side (``is_snapshot=true``), then messages of 1 to 5 level
    changes near the touch (a fifth of them deleting a level), prices at 0.1 and amounts at
    0.001, as tardis writes them (shortest decimals). About ``rows`` rows; the book never
    crosses.

    Returns
    -------
    pathlib.Path
    """
    rng = np.random.default_rng(seed)
    mid = 600_000   # tenths: 60000.0
    book = {1: {mid - offset: int(rng.integers(1, 5000)) for offset in range(1, 501)},
            -1: {mid + offset: int(rng.integers(1, 5000)) for offset in range(1, 501)}}

    def decimal(value, decimals):
        whole, part = divmod(value, 10**decimals)
        return f"{whole}.{part:0{decimals}d}".rstrip("0").rstrip(".") if part else str(whole)

    def row(time, local, snapshot, side, price, amount):
        return (f"{exchange},{symbol},{time},{local},{snapshot},{'bid' if side == 1 else 'ask'},"
                f"{decimal(price, 1)},{decimal(amount, 3)}")

    lines = ["exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"]
    time = start_us
    for side in (-1, 1):
        lines += [row(time, time + 900, "true", side, price, amount) for price, amount in book[side].items()]
    best = {1: max(book[1]), -1: min(book[-1])}
    # Drawn in bulk: a draw a call would take most of the time.
    draws = rows + 1
    steps, lags, changes = (rng.integers(1, 20_000, draws), rng.integers(500, 5_000, draws),
                            rng.integers(1, 6, draws))
    sides, offsets = rng.choice([1, -1], 5 * draws), rng.integers(-1, 20, 5 * draws)
    deletes, amounts = rng.random(5 * draws) < 0.2, rng.integers(1, 5000, 5 * draws)
    message, change = 0, 0
    while len(lines) <= rows:
        time += int(steps[message])
        local = time + int(lags[message])
        for _ in range(int(changes[message])):
            side, change = int(sides[change]), change + 1
            price = best[side] - side * int(offsets[change])
            if (price - best[-side]) * side >= 0:
                continue
            amount = 0 if deletes[change] and len(book[side]) > 10 else int(amounts[change])
            if amount:
                book[side][price] = amount
                best[side] = max(best[side], price) if side == 1 else min(best[side], price)
            elif book[side].pop(price, None) is None:
                continue
            elif price == best[side]:
                best[side] = max(book[side]) if side == 1 else min(book[side])
            lines.append(row(time, local, "false", side, price, amount))
        message += 1
    text = ("\n".join(lines) + "\n").encode()
    path = Path(path)
    path.write_bytes(gzip.compress(text, 6, mtime=0) if path.name.endswith(".gz") else text)
    return path
