"""The UDP receiver's batches: real datagrams over loopback."""

import socket
import sys
import time

import numpy as np
import pytest

from ringbook.engine.feeds import udp


def _pair():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return receiver, sender


def _receive_all(receiver, expected, timeout=5.0):
    got = []
    ends = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < ends:
        count = receiver.receive()
        got.extend(receiver.rows[i, :receiver.lengths[i]].tobytes() for i in range(count))
        if count == 0:
            time.sleep(0.001)
    return got


@pytest.mark.parametrize("method", ["recvmmsg", "recv_into"])
def test_a_batch_receives_every_datagram_byte_for_byte(method, monkeypatch):
    if method == "recvmmsg" and udp._libc_recvmmsg() is None:
        pytest.skip("no recvmmsg on this system")
    if method == "recv_into":
        monkeypatch.setattr(udp, "_libc_recvmmsg", lambda: None)
    receiver_socket, sender = _pair()
    with receiver_socket, sender:
        rows = np.zeros((8, 256), np.uint8)
        lengths = np.zeros(8, np.int64)
        receiver = udp.BatchReceiver(receiver_socket, rows, lengths)
        assert receiver.method == method
        assert receiver.receive() == 0  # nothing waits: returns at once
        rng = np.random.default_rng(7)
        sent = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in rng.integers(1, 257, 21)]
        for datagram in sent:
            sender.sendto(datagram, receiver_socket.getsockname())
        time.sleep(0.05)
        first = receiver.receive()
        assert first == 8  # a full batch in one call
        got = [rows[i, :lengths[i]].tobytes() for i in range(first)]
        got += _receive_all(receiver, len(sent) - first)
        assert got == sent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="recvmmsg is Linux's")
def test_a_datagram_longer_than_a_row_is_cut_to_the_row():
    receiver_socket, sender = _pair()
    with receiver_socket, sender:
        rows = np.zeros((2, 64), np.uint8)
        lengths = np.zeros(2, np.int64)
        receiver = udp.BatchReceiver(receiver_socket, rows, lengths)
        sender.sendto(bytes(range(100)), receiver_socket.getsockname())
        assert _receive_all(receiver, 1) == [bytes(range(64))]
