"""Shared-memory connections against Unix domain sockets, ``multiprocessing.Pipe`` and ZeroMQ ``ipc://``.

Each peer echoes 32-byte messages in a server process of its own; the client
runs in the benchmark process:

- ``<peer>_round_trip``: one message in flight, seconds per round trip;
- ``<peer>_window64``: 64 in flight, seconds per message (one connection's throughput).

Peers: ``ringbook`` (:mod:`ringbook.engine.ipc`, one I/O worker, its client's
loop in njit), ``uds`` (a stream socket, a Python echo loop), ``pipe``
(``multiprocessing.Pipe``) and ``zmq`` (a PAIR socket over ``ipc://``, when
pyzmq is installed).

After the pyperf runs the main process prints the scale test (``ringbook ipc
bench``'s, with its Unix socket baseline) at 32, 128 and 512 clients, and the
CPU a server's worker uses with 512 connected, quiet clients.
Figures from a machine shared with other work are provisional.
"""

import multiprocessing
import os
import socket
import time
import uuid

from harness import make_runner, report_ratios

import ipc_workers as workers
from ringbook.engine import ipc, ipc_cli

try:
    import zmq
except ImportError:
    zmq = None

SCALE_CLIENTS = (32, 128, 512)
SCALE_MESSAGES_IN_ALL = 320_000
QUIET_CLIENTS = 512
QUIET_SECONDS = 2.0


class Peers:
    """Every peer's server process and the client's end of it, made before timing starts."""

    def __init__(self):
        self.context = multiprocessing.get_context("spawn")
        self.children = []
        self.name = f"bm-ipc-{uuid.uuid4().hex[:8]}"
        self._start("ringbook", self.name)
        self.client = ipc.Client(self.name)
        self.payload = workers.new_payload()
        self.out = workers.new_payload()
        self.ring_loop(1, 1)  # compiled or loaded
        self.uds_path = str(ipc.socket_directory() / f"{self.name}-uds.sock")
        self._start("uds", self.uds_path)
        self.uds = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.uds.connect(self.uds_path)
        ours, theirs = self.context.Pipe()
        self._start("pipe", theirs)
        self.pipe = ours
        self.zmq = None
        if zmq is not None:
            address = f"ipc://{ipc.socket_directory()}/{self.name}-zmq"
            self._start("zmq", address)
            self.zmq = zmq.Context().socket(zmq.PAIR)
            self.zmq.connect(address)

    def _start(self, kind, address):
        ready = self.context.Queue()
        child = self.context.Process(target=workers.serve, args=(kind, address, ready), daemon=True)
        child.start()
        ready.get(timeout=300)
        self.children.append(child)

    def ring_loop(self, loops, window):
        c = self.client
        started = time.perf_counter()
        status = workers.round_trips(c.requests, c.writer, c.responses, c.reader, c.control, c.group,
                                     self.payload, self.out, loops, window)
        elapsed = time.perf_counter() - started
        if status != 0:
            raise RuntimeError(f"ringbook round trips failed with status {status}")
        return elapsed

    def timed_case(self, loop, ends, in_flight):
        """A pyperf time function: ``loop(*ends, loops, in_flight)``, timed."""
        def case(loops):
            started = time.perf_counter()
            loop(*ends, loops, in_flight)
            return time.perf_counter() - started
        return case

    def close(self):
        self.client.close()
        for child in self.children:
            child.terminate()
            child.join(5)
        if os.path.exists(self.uds_path):
            os.unlink(self.uds_path)


def scale_figures():
    """``ringbook ipc bench`` at each of :data:`SCALE_CLIENTS`, in this process."""
    for clients in SCALE_CLIENTS:
        name = f"bm-scale-{uuid.uuid4().hex[:8]}"
        messages = max(100, SCALE_MESSAGES_IN_ALL // clients)
        args = ipc_cli.build_bench_args(name, clients, messages)
        report = ipc_cli.bench_report(args)
        ipc_cli._print_report(report)


def quiet_server_cpu():
    """CPU share of a worker serving :data:`QUIET_CLIENTS` connected clients that send nothing."""
    name = f"bm-quiet-{uuid.uuid4().hex[:8]}"
    with ipc.Server(name, workers=1) as server:
        clients = [ipc.Client(name) for _ in range(QUIET_CLIENTS)]
        time.sleep(0.5)
        before = server.stats()["workers"][0]["cpu_seconds"]
        time.sleep(QUIET_SECONDS)
        after = server.stats()["workers"][0]["cpu_seconds"]
        for client in clients:
            client.close()
    print(f"\nIdle server: one worker, {QUIET_CLIENTS} quiet connections: "
          f"{(after - before) / QUIET_SECONDS:.1%} of a core")


def main():
    peers = Peers()
    runner = make_runner()
    runner.metadata["ipc_message_bytes"] = str(workers.MESSAGE_BYTES)
    window = workers.WINDOW
    transports = {"uds": (workers.socket_round_trips, (peers.uds,)),
                  "pipe": (workers.message_round_trips, (peers.pipe.send_bytes, peers.pipe.recv_bytes))}
    if peers.zmq is not None:
        transports["zmq"] = (workers.message_round_trips, (peers.zmq.send, peers.zmq.recv))
    cases = {"ringbook_round_trip": lambda loops: peers.ring_loop(loops, 1),
             f"ringbook_window{window}": lambda loops: peers.ring_loop(loops, window)}
    for peer, (loop, ends) in transports.items():
        for kind, in_flight in (("round_trip", 1), (f"window{window}", window)):
            cases[f"{peer}_{kind}"] = peers.timed_case(loop, ends, in_flight)
    try:
        results = {name: runner.bench_time_func(name, case) for name, case in cases.items()}
        pairs = [(f"ringbook_{kind}", f"{peer}_{kind}") for peer in ("uds", "pipe", "zmq")
                 for kind in ("round_trip", f"window{window}") if f"{peer}_{kind}" in cases]
        report_ratios(results, pairs)
    finally:
        peers.close()
    if runner.args.worker or any(value is None for value in results.values()):
        return
    scale_figures()
    quiet_server_cpu()


if __name__ == "__main__":
    main()
