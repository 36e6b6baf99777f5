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
CPU a server's worker uses with 512 connected, quiet clients, and adds them to the
``-o`` file, where the report judges their targets.
Figures from a machine shared with other work are provisional.
"""

import multiprocessing
import os
import socket
import time
import uuid

from harness import Comparison, Limit, add_values, bench, make_runner, run_subject

import ipc_workers as workers
from ringbook.engine import ipc, ipc_cli

try:
    import zmq
except ImportError:
    zmq = None

SCALE_CLIENTS = (32, 128, 512)
SCALE_MESSAGES_IN_ALL = 1_600_000
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
        status = workers.round_trips(c.requests, c.writer, c.responses, c.reader, c.control, c.group, c.bell,
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
    """``ringbook ipc bench`` at each of :data:`SCALE_CLIENTS`, in this process: ``{clients: report}``."""
    reports = {}
    for clients in SCALE_CLIENTS:
        name = f"bm-scale-{uuid.uuid4().hex[:8]}"
        messages = max(100, SCALE_MESSAGES_IN_ALL // clients)
        args = ipc_cli.build_bench_args(name, clients, messages)
        reports[clients] = ipc_cli.bench_report(args)
        ipc_cli._print_report(reports[clients])
    return reports


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
    share = (after - before) / QUIET_SECONDS
    print(f"\nIdle server: one worker, {QUIET_CLIENTS} quiet connections: {share:.3%} of a core")
    return share


WINDOW = workers.WINDOW
KINDS = {"round_trip": 1, f"window{WINDOW}": WINDOW}
#: Peer transports and the distribution each comes from (None: the standard library).
TRANSPORTS = {"uds": None, "pipe": None, "zmq": "pyzmq"}


def benchmark_table(peers):
    """Every pyperf benchmark of the subject, by name (the zmq rows only where pyzmq is installed)."""
    ends = {"uds": (workers.socket_round_trips, (peers.uds,)),
            "pipe": (workers.message_round_trips, (peers.pipe.send_bytes, peers.pipe.recv_bytes))}
    if peers.zmq is not None:
        ends["zmq"] = (workers.message_round_trips, (peers.zmq.send, peers.zmq.recv))
    table = {f"ringbook_{kind}": bench(peers.ring_loop, in_flight) for kind, in_flight in KINDS.items()}
    for peer, (loop, peer_ends) in ends.items():
        for kind, in_flight in KINDS.items():
            table[f"{peer}_{kind}"] = bench(peers.timed_case(loop, peer_ends, in_flight))
    return table


#: ``ringbook ipc bench``'s aggregate targets on this 2-core machine, messages per second.
SCALE_TARGETS = {32: 1.5e6, 128: 1.2e6, 512: 1.0e6}
SCALE_OVER_UDS = 10
#: The most of a core a server's idle worker may use (the idle-consumer target: about 0%).
IDLE_CPU_TARGET = 0.01


def scale_name(clients, transport="shm"):
    """The stored name of the scale test at ``clients`` over ``transport`` (``shm`` or ``uds``)."""
    return f"ipc_scale_{clients}_clients_{transport}"


COMPARISONS = [
    Comparison(f"ringbook_{kind}", f"{peer}_{kind}", peer_package=package,
               means=("round trip, one message in flight" if in_flight == 1 else
                      f"one connection's throughput, {in_flight} in flight") + f", vs {peer}")
    for peer, package in TRANSPORTS.items() for kind, in_flight in KINDS.items()
]
# Measured after the pyperf runs (scale_figures, quiet_server_cpu); the scale figures in seconds per message.
for _clients, _rate in SCALE_TARGETS.items():
    COMPARISONS += [
        Limit(scale_name(_clients), at_most=1 / _rate,
              means=f"ringbook ipc bench, {_clients} clients: at least {_rate / 1e6:g} M msg/s in all "
                    "(time per message)"),
        Comparison(scale_name(_clients), scale_name(_clients, "uds"), at_least=SCALE_OVER_UDS,
                   means=f"ringbook ipc bench, {_clients} clients: throughput vs the same test over Unix sockets"),
    ]
COMPARISONS.append(Limit(f"ipc_idle_cpu_{QUIET_CLIENTS}_quiet", at_most=IDLE_CPU_TARGET, unit="x",
                         means=f"share of a core a server worker uses with {QUIET_CLIENTS} quiet connections: "
                               "about 0 (at most 1%)"))


def store_scale(runner, reports):
    """Each scale test's aggregate throughput (and its Unix socket baseline's), as seconds per message."""
    for clients, report in reports.items():
        if report["throughput_msgs"]:
            add_values(runner, scale_name(clients), [1 / report["throughput_msgs"]])
        if report.get("uds", {}).get("throughput_msgs"):
            add_values(runner, scale_name(clients, "uds"), [1 / report["uds"]["throughput_msgs"]])


def main():
    runner = make_runner()
    runner.parse_args()  # --help exits here, before any server starts
    peers = Peers()
    try:
        runner, results = run_subject("Shared-memory connections", benchmark_table(peers), COMPARISONS,
                                      runner=runner, metadata={"ipc_message_bytes": str(workers.MESSAGE_BYTES)})
    finally:
        peers.close()
    if runner.args.worker or any(value is None for value in results.values()):
        return
    store_scale(runner, scale_figures())
    # pyperf keeps only positive values: an idle worker that used no CPU the clock could see
    # is stored as one nanosecond per second.
    add_values(runner, f"ipc_idle_cpu_{QUIET_CLIENTS}_quiet", [max(quiet_server_cpu(), 1e-9)], unit="integer")


if __name__ == "__main__":
    main()
