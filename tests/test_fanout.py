"""Market data fan-out to subscriber processes: every policy, a slow subscriber, one that dies."""

import multiprocessing
import os
import signal
import sys
import time
import uuid

import numpy as np
import pytest

from ringbook.engine import fanout
from ringbook.engine.feeds.packet import message_bounds
from ringbook.kernels import book as books
from ringbook.kernels import fanout as kfan
from ringbook.kernels.events import ASK, BID, KIND_CLEAR, KIND_L2_SET, empty_events, make_events
from ringbook.kernels.replay import apply_event
from tests.naive import NaiveBook

sys.path.insert(0, os.path.dirname(__file__))
import ipc_child  # noqa: E402


@pytest.fixture()
def ipc_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGBOOK_IPC_DIR", str(tmp_path))
    return tmp_path


def numbered_events(start, count):
    """Events whose ``sequence`` field is their index in the stream (what the subscriber checks)."""
    events = empty_events(count)
    events["sequence"] = np.arange(start, start + count)
    events["price"] = 100 + np.arange(start, start + count) % 7
    return events


def test_a_subscriber_in_this_process_gets_every_event_in_order(ipc_dir):
    with fanout.Publisher(f"pub-{uuid.uuid4().hex[:6]}", slot_count=1024) as publisher:
        subscriber = fanout.Subscriber(publisher.name, "wait")
        deadline = time.monotonic() + 5
        while publisher.subscribers == 0 and time.monotonic() < deadline:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        sent = numbered_events(0, 500)
        publisher.publish(sent)
        got = subscriber.receive(max_events=1000)
        assert np.array_equal(got, sent)
        assert subscriber.summary() == {"received": 500, "events": 500, "tops": 0, "dropped": 0, "gaps": 0,
                                        "ended": False}
    assert len(subscriber.receive()) == 0 and subscriber.ended
    with pytest.raises(ValueError):
        fanout.Subscriber(publisher.name, "sometimes")


@pytest.mark.slow
def test_fan_out_to_three_subscriber_processes_one_of_them_slow(ipc_dir):
    """Two fast subscribers (wait and drop) and a slow one (drop): the lossless one gets every
    event, the slow one loses events and is told how many, and the publisher is never held back
    by it. Then a subscriber killed with SIGKILL is dropped without harm."""
    total, batch = 200_000, 1000
    context = multiprocessing.get_context("spawn")
    with fanout.Publisher(f"pub-{uuid.uuid4().hex[:6]}", slot_count=1024) as publisher:
        children = []
        for policy, pause in (("wait", 0), ("drop", 0), ("drop", 0.05)):
            ready = context.Queue()
            child = context.Process(target=ipc_child.subscribe, args=(publisher.name, policy, total, pause, ready),
                                    daemon=True)
            child.start()
            children.append((child, ready))
        for _, ready in children:
            assert ready.get(timeout=120) == "subscribed"
        deadline = time.monotonic() + 10
        while publisher.subscribers < 3 and time.monotonic() < deadline:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        for start in range(0, total, batch):
            publisher.publish(numbered_events(start, batch))
        stats = publisher.stats()
    summaries = [ready.get(timeout=120) for _, ready in children]
    for child, _ in children:
        child.join(30)
    lossless, fast, slow = summaries
    assert lossless == {"received": total, "events": total, "tops": 0, "dropped": 0, "gaps": 0, "ended": False,
                        "rising": True, "last": total - 1}
    assert slow["dropped"] > 0 and slow["rising"]
    assert slow["received"] + slow["dropped"] == total  # told of every event it lost
    # Every drop is a gap it saw, or after the last event it received.
    assert slow["gaps"] + (total - 1 - slow["last"]) == slow["dropped"]
    assert fast["received"] + fast["dropped"] == total and fast["rising"]
    assert sorted(s["policy"] for s in stats["subscribers"]) == ["drop", "drop", "wait"]


@pytest.mark.slow
def test_a_killed_subscriber_costs_the_publisher_nothing(ipc_dir):
    context = multiprocessing.get_context("spawn")
    with fanout.Publisher(f"pub-{uuid.uuid4().hex[:6]}", slot_count=64, wait_timeout=30) as publisher:
        ready = context.Queue()
        child = context.Process(target=ipc_child.subscribe, args=(publisher.name, "wait", 10**9, 1.0, ready),
                                daemon=True)
        child.start()
        assert ready.get(timeout=120) == "subscribed"
        while publisher.subscribers == 0:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        time.sleep(0.3)  # the acceptor sees its socket end
        started = time.monotonic()
        for start in range(0, 10_000, 100):
            publisher.publish(numbered_events(start, 100))
        assert time.monotonic() - started < 5  # far less than the 30 s it would wait for a live one
        assert publisher.subscribers == 0
        deadline = time.monotonic() + 5
        while publisher.closed["gone"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the acceptor frees the row the publisher retired
        assert publisher.closed["gone"] == 1


@pytest.mark.slow
def test_ringbook_subscribe_counts_what_a_publisher_sends(ipc_dir):
    """Events from publish() and then from the engine's callback, which adds top-of-book changes:
    ``--json`` counts both kinds, the text output prints both."""
    import json
    import subprocess

    name = f"pub-{uuid.uuid4().hex[:6]}"
    messages = random_messages(7, 100)
    expected = reference_stream(messages)
    tops = sum(1 for item in expected if item[0] == "top")
    total = 3000 + len(messages) + tops
    with fanout.Publisher(name, slot_count=8192, max_symbols=8) as publisher:
        commands = [subprocess.Popen([sys.executable, "-m", "ringbook.engine.cli", "subscribe", name, "--count",
                                      str(total), "--policy", "wait", *extra], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ}) for extra in (["--json"], [])]
        deadline = time.monotonic() + 60
        while publisher.subscribers < 2 and time.monotonic() < deadline:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        for start in range(0, 3000, 500):
            publisher.publish(numbered_events(start, 500))
        callback, state = publisher.engine_state()
        book = books.new_book(n_symbols=4, depth=64, order_capacity=16, ladder=16)
        for i in range(len(messages)):
            apply_event(book, messages, i)
            if messages[i]["flags"] & 1:
                callback(book, messages, i, state)
        outputs = [command.communicate(timeout=60)[0] for command in commands]
    assert [command.returncode for command in commands] == [0, 0]
    summary = json.loads(outputs[0])
    assert (summary["received"], summary["events"], summary["tops"], summary["dropped"], summary["gaps"]) == \
        (total, 3000 + len(messages), tops, 0, 0)
    lines = outputs[1].splitlines()
    assert sum(line.startswith("event ") for line in lines) == 3000 + len(messages)
    assert sum(line.startswith("top ") for line in lines) == tops
    first_top = next(item for item in expected if item[0] == "top")
    assert f"symbol={first_top[1]}" in next(line for line in lines if line.startswith("top "))


@pytest.mark.slow
def test_ringbook_run_publishes_to_three_subscribers_one_of_them_slow(ipc_dir, tmp_path):
    """The engine's book consumer offers every event it applies: a lossless subscriber gets a
    gapless stream up to the engine's end, a slow one with the drop policy loses events and is
    told how many, and the engine is not held back by it."""
    import json
    import subprocess

    name = f"run-{uuid.uuid4().hex[:6]}"
    engine = subprocess.Popen([sys.executable, "-m", "ringbook.engine.cli", "run", "--duration", "15",
                               "--rate", "20000", "--publish", name, "--out", str(tmp_path / "journal"),
                               "--no-mlock", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        socket = ipc_dir / f"{name}.sock"
        deadline = time.monotonic() + 120
        while not socket.exists() and time.monotonic() < deadline and engine.poll() is None:
            time.sleep(0.05)
        assert socket.exists(), engine.stderr.read() if engine.poll() is not None else "no socket"
        context = multiprocessing.get_context("spawn")
        children = []
        for policy, pause in (("wait", 0), ("drop", 0), ("drop", 0.2)):
            ready = context.Queue()
            child = context.Process(target=ipc_child.subscribe, args=(name, policy, 10**9, pause, ready), daemon=True)
            child.start()
            children.append((child, ready))
        for _, ready in children:
            assert ready.get(timeout=120) == "subscribed"
        output, errors = engine.communicate(timeout=180)
        summaries = [ready.get(timeout=120) for _, ready in children]
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 0, errors
    report = json.loads(output)
    lossless, fast, slow = summaries
    assert lossless["ended"] and lossless["gaps"] == 0 and lossless["dropped"] == 0 and lossless["rising"]
    assert lossless["received"] > 1_000
    assert lossless["tops"] > 0 and lossless["events"] + lossless["tops"] == lossless["received"]
    assert lossless["last"] == report["published"]["published"] - 1  # everything since it joined
    assert slow["ended"] and slow["dropped"] > 0 and slow["rising"]
    assert slow["received"] < lossless["received"]
    assert fast["ended"] and fast["rising"]


def random_messages(seed, count, symbols=3):
    """L2 updates (some deletes, some side clears) in messages of 1..6 events over a few symbols."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, count)
    n = int(sizes.sum())
    kind = np.where(rng.random(n) < 0.03, KIND_CLEAR, KIND_L2_SET)
    side = np.where(rng.random(n) < 0.5, BID, ASK)
    # Bids below 100, asks above: deletes (quantity 0) and repeats of a level make tops that do not change.
    price = np.where(side == BID, 100 - rng.integers(0, 5, n), 101 + rng.integers(0, 5, n))
    quantity = np.where(kind == KIND_CLEAR, 0, rng.integers(0, 4, n))
    return make_events(kind, side, price, quantity, symbol=rng.integers(0, symbols, n),
                       exchange_ns=np.arange(n) * 10, local_ns=np.arange(n) * 10 + 5,
                       sequence=np.arange(1, n + 1), message=np.repeat(np.arange(count), sizes))


def reference_stream(events):
    """What the publisher must offer, from a slow book: each message's events, then for each symbol
    it touched (in order of first touch) whose best bid or ask changed, its new top."""
    book = NaiveBook()
    last = {}
    stream = []
    start = 0
    for i, event in enumerate(events):
        book.apply(event)
        if not event["flags"] & 1:
            continue
        stream += [("event", int(e["sequence"])) for e in events[start:i + 1]]
        for symbol in dict.fromkeys(int(s) for s in events[start:i + 1]["symbol"]):
            top = []
            for side in (BID, ASK):
                best = book.best(symbol, side)
                top += list(best) if best else [books.NO_PRICE, 0]
            if last.get(symbol, [books.NO_PRICE, 0, books.NO_PRICE, 0]) != top:
                last[symbol] = top
                stream.append(("top", symbol, *top, int(events[i]["sequence"]), int(events[i]["exchange_ns"])))
        start = i + 1
    return stream


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_engine_callback_publishes_events_and_top_of_book_changes(ipc_dir, seed):
    """The book consumer's callback, driven as the engine does (apply a message, call it at its last
    event; several messages in one packet), against a slow book's stream of events and tops."""
    events = random_messages(seed, 300)
    with fanout.Publisher(f"pub-{uuid.uuid4().hex[:6]}", slot_count=8192, max_symbols=8) as publisher:
        subscriber = fanout.Subscriber(publisher.name, "wait")
        deadline = time.monotonic() + 5
        while publisher.subscribers == 0 and time.monotonic() < deadline:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        callback, state = publisher.engine_state()
        book = books.new_book(n_symbols=4, depth=64, order_capacity=16, ladder=16)
        starts, stops = message_bounds(events)
        for group in np.array_split(np.arange(len(starts)), 7):  # packets of whole messages
            packet_events = events[starts[group[0]]:stops[group[-1]]]
            for i in range(len(packet_events)):
                assert apply_event(book, packet_events, i) >= 0
                if packet_events[i]["flags"] & 1:
                    callback(book, packet_events, i, state)
        got = []
        while subscriber.received < publisher.sequence:
            got_events, got_tops = subscriber.receive_batch(timeout=5)
            next_event = iter(got_events)
            next_top = iter(got_tops)
            for kind in subscriber.kinds:
                if kind == kfan.RECORD_TOP:
                    t = next(next_top)
                    got.append(("top", int(t["symbol"]), int(t["bid_price"]), int(t["bid_quantity"]),
                                int(t["ask_price"]), int(t["ask_quantity"]), int(t["sequence"]),
                                int(t["exchange_ns"])))
                else:
                    got.append(("event", int(next(next_event)["sequence"])))
    expected = reference_stream(events)
    assert sum(1 for item in expected if item[0] == "top") > 50
    assert got == expected
    assert subscriber.gaps == 0 and subscriber.tops == sum(1 for item in expected if item[0] == "top")
