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
from ringbook.kernels.events import empty_events

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
        assert subscriber.summary() == {"received": 500, "dropped": 0, "gaps": 0, "ended": False}
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
    assert lossless == {"received": total, "dropped": 0, "gaps": 0, "ended": False, "rising": True,
                        "last": total - 1}
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
    import json
    import subprocess

    name = f"pub-{uuid.uuid4().hex[:6]}"
    with fanout.Publisher(name, slot_count=4096) as publisher:
        command = subprocess.Popen([sys.executable, "-m", "ringbook.engine.cli", "subscribe", name, "--count", "3000",
                                    "--policy", "wait", "--json"], stdout=subprocess.PIPE, text=True,
                                   env={**os.environ})
        deadline = time.monotonic() + 60
        while publisher.subscribers == 0 and time.monotonic() < deadline:
            publisher.publish(numbered_events(0, 0))
            time.sleep(0.01)
        for start in range(0, 3000, 500):
            publisher.publish(numbered_events(start, 500))
        output, _ = command.communicate(timeout=60)
    assert command.returncode == 0
    summary = json.loads(output)
    assert (summary["received"], summary["dropped"], summary["gaps"]) == (3000, 0, 0)


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
    assert lossless["last"] == report["published"]["published"] - 1  # everything since it joined
    assert slow["ended"] and slow["dropped"] > 0 and slow["rising"]
    assert slow["received"] < lossless["received"]
    assert fast["ended"] and fast["rising"]
