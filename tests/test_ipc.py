"""Shared-memory connections with real parts: a server with worker threads, clients in other
processes over a real Unix domain socket and sealed memfds, a client killed with SIGKILL, one
that never reads, one that corrupts its rings, and one of another uid."""

import fcntl
import multiprocessing
import os
import signal
import stat
import sys
import time
import uuid

import numpy as np
import pytest

from ringbook.engine import ipc, ipc_cli
from ringbook.kernels import connection as conn
from ringbook.kernels import ring

sys.path.insert(0, os.path.dirname(__file__))
import ipc_child  # noqa: E402  (spawned children import it by name)

STALL_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def ipc_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ipc")
    os.chmod(directory, 0o700)
    old = os.environ.get("RINGBOOK_IPC_DIR")
    os.environ["RINGBOOK_IPC_DIR"] = str(directory)
    yield directory
    if old is None:
        del os.environ["RINGBOOK_IPC_DIR"]
    else:
        os.environ["RINGBOOK_IPC_DIR"] = old


@pytest.fixture(scope="module")
def server(ipc_dir):
    """One echo server for the module (its worker loop compiles once): two workers."""
    with ipc.Server(f"test-{uuid.uuid4().hex[:8]}", workers=2, slot_count=64, stall_timeout=STALL_TIMEOUT) as running:
        yield running


def closed_count(server, reason):
    return sum(worker["closed"].get(reason, 0) for worker in server.stats()["workers"])


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def spawn(target, *args):
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    child = context.Process(target=target, args=(*args, ready), daemon=True)
    child.start()
    return child, ready


def test_a_client_gets_its_echo_through_shared_memory(server):
    with ipc.Client(server.name) as client:
        assert client.request(b"hello") == b"hello"
        payloads = [bytes([i % 256]) * (i % client.capacity + 1) for i in range(300)]
        assert [client.request(p) for p in payloads] == payloads
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700


def test_the_region_is_sealed_and_owner_only():
    fd, mapping, slab = ipc.sealed_region(8192, "test")
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1 << 20)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert slab.size == 8192
    finally:
        del slab
        mapping.close()
        os.close(fd)


def test_a_region_whose_rings_point_outside_it_is_refused():
    fd, mapping, slab = ipc.sealed_region(ipc.connection_bytes(8, 64), "test")
    try:
        ipc.format_connection(slab, 8, 64, False)
        slab[conn.RESPONSE_OFFSET:conn.RESPONSE_OFFSET + 8].view(np.int64)[0] = slab.size
        with pytest.raises(ipc.IpcError, match="response ring at"):
            ipc._rings(slab)
    finally:
        del slab
        mapping.close()
        os.close(fd)


def test_an_unknown_name_is_a_clear_error(ipc_dir):
    with pytest.raises(FileNotFoundError):
        ipc.Client("nobody-serves-this")


def test_no_lost_wake_up_when_both_sides_park_on_every_message(ipc_dir):
    """No spinning anywhere: each request parks the worker and each response parks the client;
    a lost wake-up would leave a request unanswered past the 2 s timeout."""
    with ipc.Server(f"park-{uuid.uuid4().hex[:8]}", spins=0) as parked:
        with ipc.Client(parked.name, spins=0) as client:
            for i in range(3000):
                payload = i.to_bytes(4, "little")
                assert client.request(payload, timeout=2.0) == payload
        assert parked.stats()["workers"][0]["parks"] > 100


def test_no_lost_wake_up_with_many_connections_parking_on_one_page(ipc_dir):
    """The load generator over 24 connections in two worker groups, nobody spinning: every pass
    that moves nothing parks the generator on its process's page and each idle worker on its
    group's doorbell; a wake-up lost by the once-per-pass rings would stall a worker for its
    whole 1 s slice, past the generator's 0.5 s limit."""
    import numba
    from numba import types

    from ringbook.kernels.hist import Histogram

    with ipc.Server(f"parkmany-{uuid.uuid4().hex[:8]}", workers=2, spins=0, pin=False) as parked:
        clients = [ipc.Client(parked.name, spins=0) for _ in range(24)]
        try:
            lists = [numba.typed.List.empty_list(types.uint8[::1]) for _ in range(4)]
            states = np.zeros((len(clients), 32), np.int64)
            for row, client in enumerate(clients):
                for listing, item in zip(lists, (client.requests, client.responses, client.control, client.group)):
                    listing.append(item)
                states[row, :16], states[row, 16:] = client.reader, client.writer
            group_ids = {}
            group_of = np.array([group_ids.setdefault(c.group_id, len(group_ids)) for c in clients], np.int64)
            assert len(group_ids) == 2 and len({c.bell_id for c in clients}) == 1
            payload, out = np.full(32, 7, np.uint8), np.zeros(32, np.uint8)
            histogram = Histogram(lowest=1, highest=10**11)
            result = np.zeros(4, np.int64)
            status = conn.drive_echo(*lists, group_of, clients[0].bell, states, 300, 3, payload, out,
                                     histogram.counts, histogram.meta, 0, 500_000_000, result)
            assert status == conn.OK
            assert list(result[:3]) == [24 * 300, 0, 24]
            assert sum(worker["parks"] for worker in parked.stats()["workers"]) > 10  # the workers did park
            for row, client in enumerate(clients):
                client.reader[:], client.writer[:] = states[row, :16], states[row, 16:]
        finally:
            for client in clients:
                client.close()


@pytest.mark.slow
def test_many_clients_in_several_processes(server):
    result = ipc_cli._run_processes(ipc_cli._ipc_clients, server.name, 24, 3, 500, 8)
    assert result["errors"] == 0
    assert result["messages_echoed"] == 24 * 500
    assert result["rtt_ns"]["p50"] > 0


@pytest.mark.slow
def test_a_client_killed_mid_stream_costs_only_its_connection(server):
    gone_before = closed_count(server, "client gone")
    child, ready = spawn(ipc_child.request_forever, server.name)
    ready.get(timeout=60)
    with ipc.Client(server.name) as survivor:
        assert survivor.request(b"before") == b"before"
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert wait_for(lambda: closed_count(server, "client gone") == gone_before + 1)
        for i in range(200):
            assert survivor.request(b"after %d" % i) == b"after %d" % i


def page_of(server, pid):
    """``(connections, waiters)`` of process ``pid``'s client page, or ``None`` when it has none."""
    return next((value for key, value in server.client_pages().items() if key[0] == pid), None)


@pytest.mark.slow
def test_a_waiter_killed_while_parked_leaves_nothing_behind(server):
    """A client killed with SIGKILL while parked for a reply leaves its announce in its process's
    client page: the page goes with the connection, so no later ring wakes anybody for it."""
    child, ready = spawn(ipc_child.park_for_a_reply, server.name)
    pid = ready.get(timeout=60)
    assert wait_for(lambda: page_of(server, pid) == (1, 1))  # connected, and parked
    os.kill(pid, signal.SIGKILL)
    child.join(10)
    assert wait_for(lambda: page_of(server, pid) is None)
    with ipc.Client(server.name) as survivor:
        assert page_of(server, os.getpid()) == (1, 0)
        wakes_before = sum(worker["client_wakes"] for worker in server.stats()["workers"])
        # Requests read by polling, never parked for: nothing to wake, so the worker makes no FUTEX_WAKE.
        out = np.zeros(survivor.capacity, np.uint8)
        for i in range(200):
            assert survivor.send(b"poll %d" % i)
            while (length := ring.try_read(survivor.responses, survivor.reader, out)) == ring.EMPTY:
                pass
            assert out[:length].tobytes() == b"poll %d" % i
        assert sum(worker["client_wakes"] for worker in server.stats()["workers"]) == wakes_before


@pytest.mark.slow
def test_a_client_that_never_reads_is_closed_alone(server):
    stalled_before = closed_count(server, "stalled")
    child, ready = spawn(ipc_child.never_read, server.name)
    try:
        sent = ready.get(timeout=60)
        assert sent >= 64  # its request ring filled
        with ipc.Client(server.name) as other:
            started = time.monotonic()
            answered = 0
            # The other client goes on at its own pace while the first one stalls.
            while time.monotonic() - started < STALL_TIMEOUT + 0.5:
                assert other.request(b"x" * 16) == b"x" * 16
                answered += 1
            assert answered > 100
        assert wait_for(lambda: closed_count(server, "stalled") == stalled_before + 1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)


def test_a_client_that_corrupts_its_rings_is_closed_and_told(server):
    corrupt_before = closed_count(server, "corrupt")
    with ipc.Client(server.name) as bad, ipc.Client(server.name) as good:
        assert bad.request(b"fine") == b"fine"
        # A producer position far beyond anything written: the worker must not trust it.
        bad.requests[ring.PRODUCER_POSITION_OFFSET:ring.PRODUCER_POSITION_OFFSET + 8].view(np.int64)[0] = 1 << 40
        slot = ring.control_bytes(1) + ring.SLOT_HEADER_BYTES  # and a slot whose length is absurd
        bad.requests[slot - ring.SLOT_HEADER_BYTES:slot - ring.SLOT_HEADER_BYTES + 4].view(np.uint32)[0] = 1 << 30
        conn.notify_server(bad.control, bad.group)
        with pytest.raises(ipc.IpcError, match="corrupt"):
            bad.receive(timeout=5)
        assert bad.closed_reason == "corrupt"
        assert good.request(b"still here") == b"still here"
    assert closed_count(server, "corrupt") == corrupt_before + 1


@pytest.mark.parametrize("opened", [False, True], ids=["owner-only-socket", "socket-opened-to-all"])
def test_a_client_of_another_uid_is_refused(server, ipc_dir, opened):
    """As root: a forked child drops to uid 65534. The 0600 socket keeps it out; opened to
    everyone by mistake, the server still refuses it by its SO_PEERCRED uid."""
    if os.geteuid() != 0:
        pytest.skip("switching uid needs root")
    refused_before = sum(server.refused.values())
    directory = ipc_dir
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    if opened:
        # A hard link in a folder anyone may enter, to the same socket, opened to everyone.
        directory = f"/tmp/ringbook-open-{uuid.uuid4().hex[:8]}"
        os.mkdir(directory, 0o755)
        os.chmod(directory, 0o755)
        os.link(server.path, os.path.join(directory, f"{server.name}.sock"))
        os.chmod(server.path, 0o666)
    try:
        child = os.fork()
        if child == 0:
            ipc_child.as_other_uid(server.name, 65534, str(directory))
        _, status = os.waitpid(child, 0)
    finally:
        os.chmod(server.path, mode)
        if opened:
            os.unlink(os.path.join(directory, f"{server.name}.sock"))
            os.rmdir(directory)
    code = os.waitstatus_to_exitcode(status)
    if opened:
        assert code == 11
        assert sum(server.refused.values()) == refused_before + 1
    else:
        assert code == 10
