"""``ringbook ipc``: serve shared-memory connections, and the end-to-end scale test.

``ringbook ipc serve NAME [--workers N]`` runs an echo server until Ctrl-C.
``ringbook ipc bench NAME --clients N --messages M [--json]`` spreads N
connections over a few client processes; each connection sends M messages
(at most ``--window`` in flight) and checks each echo. It uses the server
running under NAME, or starts one in this process when none is. The same
test then runs over Unix domain sockets (a Python echo server with a selector,
one socket per client, a send per message; ``--stream-baseline`` adds the
same over a byte stream) in the same run, and the report gives both and their
ratio.
"""

import json
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time

import numpy as np

from ringbook.engine import ipc
from ringbook.kernels import connection as conn
from ringbook.kernels import futex
from ringbook.kernels.hist import Histogram

MESSAGE_BYTES = 32
#: Client processes at most: the connections are spread over these.
MAX_CLIENT_PROCESSES = 4
_HIGHEST_NS = 10**11


def add_arguments(parser):
    sub = parser.add_subparsers(dest="ipc_command", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="serve echo connections under NAME until interrupted")
    serve.add_argument("name")
    serve.add_argument("--workers", type=int, default=1, help="I/O worker threads (default 1)")
    serve.add_argument("--stall-timeout", type=float, default=1.0,
                       help="seconds a client may leave its responses unread before it is closed")
    bench = sub.add_parser("bench", help="N clients send M messages each and wait for the echo")
    bench.add_argument("name")
    bench.add_argument("--clients", type=int, default=32)
    bench.add_argument("--messages", type=int, default=10_000, help="messages per client")
    bench.add_argument("--window", type=int, default=16, help="messages in flight per client (default 16)")
    bench.add_argument("--processes", type=int, default=None,
                       help=f"client processes (default: up to {MAX_CLIENT_PROCESSES})")
    bench.add_argument("--workers", type=int, default=1, help="I/O workers of a server this command starts")
    bench.add_argument("--baseline-messages", type=int, default=None,
                       help="messages per client over Unix domain sockets (default: --messages, "
                            "at most 400,000 in all); 0 skips the baseline")
    bench.add_argument("--stream-baseline", action="store_true",
                       help="also run the baseline as a byte stream (one send carries many messages)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    if args.ipc_command == "serve":
        return _serve(args)
    return _bench(args)


def _serve(args):
    server = ipc.Server(args.name, workers=args.workers, stall_timeout=args.stall_timeout)
    server.start()
    print(f"serving {args.name} on {server.path} with {args.workers} worker(s); Ctrl-C stops", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    print(json.dumps(server.stats()))
    return 0


# The shared-memory test, in each client process.

def _ipc_clients(name, count, messages, window, ready, start, results):
    """Connect ``count`` clients and load the driver, say so on ``ready``, wait for ``start``,
    drive them; put a result dict on ``results``."""
    import numba
    from numba import types

    clients = [ipc.Client(name) for _ in range(count)]
    lists = [numba.typed.List.empty_list(types.uint8[::1]) for _ in range(4)]
    states = np.zeros((count, 32), np.int64)
    for row, client in enumerate(clients):
        for listing, item in zip(lists, (client.requests, client.responses, client.control, client.group)):
            listing.append(item)
        states[row, :16] = client.reader
        states[row, 16:] = client.writer
    if len({client.bell_id for client in clients}) > 1:
        raise ipc.IpcError(f"the connections of one process to {name!r} got different client pages")
    bell = clients[0].bell
    group_ids = {}
    group_of = np.array([group_ids.setdefault(client.group_id, len(group_ids)) for client in clients], np.int64)
    payload = np.full(MESSAGE_BYTES, 7, np.uint8)
    out = np.zeros(MESSAGE_BYTES, np.uint8)
    histogram = Histogram(lowest=1, highest=_HIGHEST_NS)
    result = np.zeros(4, np.int64)
    conn.drive_echo(*lists, group_of, bell, states, 0, window, payload, out, histogram.counts, histogram.meta, 0, 0, result)
    ready.put(os.getpid())
    start.wait()
    began, cpu_began = time.monotonic(), time.process_time()
    status = conn.drive_echo(*lists, group_of, bell, states, messages, window, payload, out, histogram.counts, histogram.meta,
                             futex.DEFAULT_SPINS, 10_000_000_000, result)
    ended, cpu = time.monotonic(), time.process_time() - cpu_began
    for row, client in enumerate(clients):  # what the kernel moved, back in each client's own state
        client.reader[:] = states[row, :16]
        client.writer[:] = states[row, 16:]
    stats = clients[0].server_stats() if clients else None
    for client in clients:
        client.close()
    results.put({"echoed": int(result[0]), "errors": int(result[1]) + (status != conn.OK), "parks": int(result[3]),
                 "began": began, "ended": ended, "counts": histogram.counts, "meta": histogram.meta,
                 "server": stats, "cpu_seconds": cpu})


# The same test over Unix domain sockets.
#
# Two framings. ``message`` (the peer of the ratio): a request/response server
# like ours, in one thread with a selector: it cuts what it reads into
# messages and answers each with a send of its own, and the client sends each
# new request by itself as a reply frees room in its window. ``stream``: the
# server echoes whatever bytes it read with one send and the client refills its
# window with one send, so one system call carries many messages (a byte pipe,
# not a request/response path).

BASELINE_FRAMINGS = ("message", "stream")


def _uds_echo_server(listener, stop, framing):
    """Echo on every connection (one thread, a selector) until ``stop``: per message, or the
    bytes as read (``framing``)."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ)
    partial = {}
    per_message = framing == "message"
    while not stop.is_set():
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            if sock is listener:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(True)
                partial[sock] = b""
                selector.register(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                del partial[sock]
                sock.close()
            elif per_message:
                data = partial[sock] + data
                whole = len(data) - len(data) % MESSAGE_BYTES
                for at in range(0, whole, MESSAGE_BYTES):
                    sock.sendall(data[at:at + MESSAGE_BYTES])
                partial[sock] = data[whole:]
            else:
                sock.sendall(data)
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()


def _uds_clients(where, count, messages, window, ready, start, results):
    """The client side of the baseline: ``count`` sockets, ``window`` messages in flight on each;
    ``where`` is ``(path, framing)``."""
    path, framing = where
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sockets.append(sock)
    histogram = Histogram(lowest=1, highest=_HIGHEST_NS)
    selector = selectors.DefaultSelector()
    sent, received, pending = {}, {}, {}
    round_trips = []  # recorded after the clock stops
    padding = bytes(MESSAGE_BYTES - 8)
    ready.put(os.getpid())
    start.wait()
    began, cpu_began = time.monotonic(), time.process_time()

    def send(sock, how_many):
        if framing == "message":
            for _ in range(how_many):
                sock.sendall(time.monotonic_ns().to_bytes(8, "little") + padding)
        else:
            sock.sendall((time.monotonic_ns().to_bytes(8, "little") + padding) * how_many)
        sent[sock] += how_many

    for sock in sockets:
        sent[sock], received[sock], pending[sock] = 0, 0, b""
        selector.register(sock, selectors.EVENT_READ)
        send(sock, min(window, messages))
    finished = 0
    errors = 0
    while finished < count:
        events = selector.select(10)
        if not events:
            errors += count - finished
            break
        for key, _ in events:
            sock = key.fileobj
            data = pending[sock] + sock.recv(65536)
            if not data:
                errors += 1
                finished += 1
                selector.unregister(sock)
                continue
            whole = len(data) // MESSAGE_BYTES
            now = time.monotonic_ns()
            for i in range(whole):
                round_trips.append(now - int.from_bytes(data[i * MESSAGE_BYTES:i * MESSAGE_BYTES + 8], "little"))
            pending[sock] = data[whole * MESSAGE_BYTES:]
            received[sock] += whole
            more = min(messages - sent[sock], window - (sent[sock] - received[sock]))
            if more > 0:
                send(sock, more)
            if received[sock] >= messages:
                finished += 1
                selector.unregister(sock)
    ended, cpu = time.monotonic(), time.process_time() - cpu_began
    histogram.record_many(np.array(round_trips, np.int64))
    for sock in sockets:
        sock.close()
    results.put({"echoed": sum(received.values()), "errors": errors, "began": began, "ended": ended,
                 "counts": histogram.counts, "meta": histogram.meta, "server": None, "cpu_seconds": cpu})


def _run_processes(target, first_argument, clients, processes, messages, window, on_start=None):
    """Spread ``clients`` over ``processes`` spawned processes running ``target``; the merged result."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results, ready = context.Queue(), context.Queue()
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    children = [context.Process(target=target, args=(first_argument, share, messages, window, ready, start, results))
                for share in shares if share > 0]
    for child in children:
        child.start()
    # Every process connects and loads its kernels before the clock starts.
    for _ in children:
        ready.get(timeout=300)
    started = on_start() if on_start else None
    start.set()
    parts = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join(30)
    histogram = Histogram(lowest=1, highest=_HIGHEST_NS)
    for part in parts:
        histogram.merge(Histogram.from_arrays(part["counts"], part["meta"]))
    seconds = max(part["ended"] for part in parts) - min(part["began"] for part in parts)
    echoed = sum(part["echoed"] for part in parts)
    return {"messages_echoed": echoed, "errors": sum(part["errors"] for part in parts),
            "seconds": seconds, "throughput_msgs": echoed / seconds if seconds > 0 else 0.0,
            "rtt_ns": {"p50": histogram.value_at_percentile(50.0), "p99": histogram.value_at_percentile(99.0),
                       "p999": histogram.value_at_percentile(99.9)},
            "client_cpu_seconds": sum(part["cpu_seconds"] for part in parts),
            "client_parks": sum(part.get("parks", 0) for part in parts),
            "server": next((part["server"] for part in parts if part["server"]), None), "started": started}


def build_bench_args(name, clients, messages, window=16, processes=None, workers=1, baseline_messages=None,
                     stream_baseline=False):
    """The arguments of ``ringbook ipc bench``, for :func:`bench_report` from Python."""
    import argparse
    return argparse.Namespace(name=name, clients=clients, messages=messages, window=window, processes=processes,
                              workers=workers, baseline_messages=baseline_messages, stream_baseline=stream_baseline,
                              json=False)


def bench_report(args):
    """Run the scale test ``args`` describe (and its Unix socket baseline): the report as a dict."""
    if args.clients < 1 or args.messages < 1 or args.window < 1:
        raise ValueError("ringbook ipc bench: --clients, --messages and --window must be at least 1")
    processes = args.processes or min(MAX_CLIENT_PROCESSES, args.clients)
    server = None
    try:
        ipc.Client(args.name).close()
    except (FileNotFoundError, ConnectionRefusedError):
        server = ipc.Server(args.name, workers=args.workers, slot_count=max(64, 4 * args.window)).start()
    try:
        shared = _run_processes(_ipc_clients, args.name, args.clients, processes, args.messages, args.window,
                                on_start=server.stats if server else None)
        before = shared.pop("started")
        after = server.stats() if server else shared.pop("server")
        shared.pop("server", None)
    finally:
        if server is not None:
            server.stop()
    report = {"clients": args.clients, "messages": args.messages, "window": args.window,
              "processes": processes, "errors": shared["errors"], "throughput_msgs": shared["throughput_msgs"],
              "rtt_ns": shared["rtt_ns"], "seconds": shared["seconds"],
              "client_cpu_seconds": shared["client_cpu_seconds"], "client_parks": shared["client_parks"],
              "server": _server_report(before, after)}
    baseline_messages = args.baseline_messages
    if baseline_messages is None:
        baseline_messages = max(1, min(args.messages, 400_000 // args.clients))
    if baseline_messages > 0:
        report["uds"] = _uds_baseline(args.clients, processes, baseline_messages, args.window)
        report["ratio_vs_uds"] = (report["throughput_msgs"] / report["uds"]["throughput_msgs"]
                                  if report["uds"]["throughput_msgs"] else None)
        if getattr(args, "stream_baseline", False):
            report["uds_stream"] = _uds_baseline(args.clients, processes, baseline_messages, args.window, "stream")
            report["ratio_vs_uds_stream"] = (report["throughput_msgs"] / report["uds_stream"]["throughput_msgs"]
                                             if report["uds_stream"]["throughput_msgs"] else None)
    return report


def _bench(args):
    try:
        report = bench_report(args)
    except ValueError as error:
        raise SystemExit(str(error))
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0 if report["errors"] == 0 else 1


def _server_report(before, after):
    """Per worker: core, connections closed, CPU seconds used during the test."""
    if after is None:
        return None
    workers = []
    for index, worker in enumerate(after["workers"]):
        cpu = worker["cpu_seconds"]
        if before is not None and cpu is not None and before["workers"][index]["cpu_seconds"] is not None:
            cpu -= before["workers"][index]["cpu_seconds"]
        workers.append({"worker": worker["worker"], "core": worker["core"], "cpu_seconds": cpu,
                        "messages": worker["messages"], "parks": worker["parks"],
                        "client_wakes": worker["client_wakes"], "closed": worker["closed"]})
    return {"accepted": after["accepted"], "refused": after["refused"], "workers": workers}


def _uds_baseline(clients, processes, messages, window, framing="message"):
    """The scale test over Unix domain sockets with ``framing`` (:data:`BASELINE_FRAMINGS`)."""
    path = str(ipc.socket_directory() / f"uds-baseline-{os.getpid()}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1024)
    stop = threading.Event()
    thread = threading.Thread(target=_uds_echo_server, args=(listener, stop, framing), daemon=True)
    thread.start()
    try:
        result = _run_processes(_uds_clients, (path, framing), clients, processes, messages, window)
    finally:
        stop.set()
        thread.join()
        listener.close()
        os.unlink(path)
    result.pop("server", None)
    result["messages"] = messages
    result["framing"] = framing
    return result


def _print_report(report):
    rtt = report["rtt_ns"]
    print(f"ringbook ipc bench: {report['clients']} clients in {report['processes']} processes, "
          f"{report['messages']} messages each, {report['window']} in flight")
    print(f"  shared memory: {report['throughput_msgs']:,.0f} msg/s, round trip p50 {rtt['p50']:,} ns, "
          f"p99 {rtt['p99']:,} ns, p99.9 {rtt['p999']:,} ns, errors {report['errors']}, "
          f"clients' CPU {report['client_cpu_seconds'] / max(report['seconds'], 1e-9):.0%} of a core, "
          f"parks {report['client_parks']}")
    for key, label in (("uds", "Unix sockets, a send per message"), ("uds_stream", "Unix sockets, a byte stream")):
        if key in report:
            uds = report[key]
            print(f"  {label}: {uds['throughput_msgs']:,.0f} msg/s, round trip p50 {uds['rtt_ns']['p50']:,} ns, "
                  f"p99 {uds['rtt_ns']['p99']:,} ns ({uds['messages']} messages each), errors {uds['errors']}")
            if report[f"ratio_vs_{key}"]:
                print(f"    ratio: {report[f'ratio_vs_{key}']:.1f}x its throughput")
    server = report["server"]
    if server:
        for worker in server["workers"]:
            cpu = worker["cpu_seconds"]
            share = f"{cpu / report['seconds']:.0%} of a core" if cpu is not None and report["seconds"] else "?"
            print(f"  worker {worker['worker']} on core {worker['core']}: {share}, parks {worker['parks']}, "
                  f"clients woken {worker['client_wakes']}, "
                  f"closed {worker['closed'] or 'none'}")
