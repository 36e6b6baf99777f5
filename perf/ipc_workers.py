"""The echo servers of ``bm_ipc.py``'s peers and its clients' loops (a spawned server process
imports only this)."""

import os
import signal
import socket
import time

import numpy as np

from ringbook.kernels import connection as conn
from ringbook.kernels import futex, ring
from ringbook.kernels.jit_options import kernel
from ringbook.kernels.status import OK

MESSAGE_BYTES = 32
WINDOW = 64


def serve(kind, address, ready):
    """Echo on ``address`` with the transport ``kind`` until SIGTERM; put ``"ready"`` once listening."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if kind == "ringbook":
        from ringbook.engine import ipc
        with ipc.Server(address, workers=1):
            ready.put("ready")
            while True:
                time.sleep(1)
    elif kind == "uds":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(1)
        ready.put("ready")
        sock, _ = listener.accept()
        while True:
            data = sock.recv(65536)
            if not data:
                os._exit(0)
            sock.sendall(data)
    elif kind == "pipe":
        ready.put("ready")
        while True:
            address.send_bytes(address.recv_bytes())
    elif kind == "zmq":
        import zmq
        pair = zmq.Context().socket(zmq.PAIR)
        pair.bind(address)
        ready.put("ready")
        while True:
            pair.send(pair.recv())


@kernel
def round_trips(requests, writer, responses, reader, control, group, bell, payload, out, loops, window):
    """``loops`` messages with at most ``window`` in flight (1: one round trip at a time);
    :data:`OK` or the first failing status."""
    sent = 0
    received = 0
    while received < loops:
        while sent < loops and sent - received < window:
            status = ring.try_write(requests, writer, payload, 0, 0)
            if status == ring.FULL:
                break
            if status != ring.OK:
                return status
            sent += 1
        conn.notify_server(control, group)
        length = conn.receive_wait(responses, reader, out, control, bell, futex.DEFAULT_SPINS, 5_000_000_000)
        if length < 0:
            return length
        received += 1
        while received < sent:
            length = ring.try_read(responses, reader, out)
            if length == ring.EMPTY:
                break
            if length < 0:
                return length
            received += 1
    return OK


def socket_round_trips(sock, loops, window):
    """The same over a stream socket: messages of :data:`MESSAGE_BYTES`, ``window`` in flight."""
    message = bytes(MESSAGE_BYTES)
    sent = received = 0
    pending = 0
    while received < loops:
        batch = min(loops - sent, window - (sent - received))
        if batch > 0:
            sock.sendall(message * batch)
            sent += batch
        pending += len(sock.recv(65536))
        received += pending // MESSAGE_BYTES
        pending %= MESSAGE_BYTES


def message_round_trips(send, receive, loops, window):
    """The same through a message transport (``multiprocessing.Pipe``, a ZeroMQ PAIR socket)."""
    message = bytes(MESSAGE_BYTES)
    sent = received = 0
    while received < loops:
        while sent < loops and sent - received < window:
            send(message)
            sent += 1
        receive()
        received += 1


def new_payload():
    return np.full(MESSAGE_BYTES, 7, np.uint8)
