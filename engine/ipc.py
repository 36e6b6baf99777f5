"""Shared-memory connections between local processes: a :class:`Server` and its :class:`Client`.

A server listens on a Unix domain socket under a name. A client connects; the
server checks the peer's uid (``SO_PEERCRED``), makes the connection's region
(two rings and the worker's doorbell, :mod:`ringbook.kernels.connection`) in a memfd
sealed against shrinking and growing, mode 0600, and hands it over with
``SCM_RIGHTS`` together with its worker's group page and the client page of
the peer's process (one per client process, by its ``SO_PEERCRED`` pid: the
doorbell that process parks on for all its connections). From then on every
message goes through shared memory; the socket stays open only so that the
server learns at once when the client's process ends.

The server runs N I/O worker threads, each pinned to a core and serving a
group of connections in a nogil njit loop (:func:`ringbook.kernels.connection.serve`)
that calls the request handler, a user's ``@njit`` function
(:func:`ringbook.kernels.connection.echo` by default), and parks on its group's
futex doorbell when every connection is idle. A client that stops reading
(its response ring full past ``stall_timeout``), dies, or corrupts its rings
costs only its own connection: detected, counted by reason, closed.
"""

import fcntl
import json
import mmap
import os
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import numba
import numpy as np
from numba import types

from ringbook.engine.ring import new_state, sealed_memfd
from ringbook.engine.system import usable_cores
from ringbook.kernels import connection as conn
from ringbook.kernels import futex, ring
from ringbook.kernels.status import status_name

#: Handshake lines (then the descriptors, or the reason of a refusal).
GREETING_OK = b"RBIPC 2 OK\n"
GREETING_REFUSED = b"RBIPC 1 REFUSED "
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
_PAGE = mmap.PAGESIZE
#: How long a worker's njit loop runs before it returns to its Python loop (membership changes
#: and stop requests ring it at once; an idle worker sleeps through the slice).
SLICE_NS = 1_000_000_000


def _file_id(fd):
    """``(st_dev, st_ino)``: the same for every descriptor of one memfd."""
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


class IpcError(RuntimeError):
    """A connection could not be made or was closed by the server (``reason``: what it said)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


def socket_directory():
    """Where servers put their sockets: ``$RINGBOOK_IPC_DIR``, else ``$XDG_RUNTIME_DIR/ringbook``,
    else ``/tmp/ringbook-<uid>``; created with mode 0700."""
    base = os.environ.get("RINGBOOK_IPC_DIR")
    if base is None:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        base = os.path.join(runtime, "ringbook") if runtime else f"/tmp/ringbook-{os.geteuid()}"
    directory = Path(base)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def socket_path(name):
    """The socket of server ``name`` (one path component)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a server name is one path component, got {name!r}")
    return socket_directory() / f"{name}.sock"


def sealed_region(size, label):
    """A zeroed memfd of ``size`` bytes, mode 0600, sealed against shrinking and growing
    (:func:`ringbook.engine.ring.sealed_memfd`), mapped: ``(fd, mapping, slab)``."""
    fd = sealed_memfd(f"ipc-{label}", size)
    try:
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return fd, mapping, np.frombuffer(mapping, dtype=np.uint8)
    except BaseException:
        os.close(fd)
        raise


def map_sealed(fd, what, minimum):
    """Map a region received from a server, after checking that it cannot shrink: ``(mapping, slab)``."""
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    if seals & _SEALS != _SEALS:
        raise IpcError(f"the server's {what} is not sealed against shrinking and growing (seals {seals:#x})")
    size = os.fstat(fd).st_size
    if size < minimum:
        raise IpcError(f"the server's {what} is truncated: {size} bytes, expected at least {minimum}")
    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mapping, np.frombuffer(mapping, dtype=np.uint8)


def peer_credentials(sock):
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket, from the kernel."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


def listen(path):
    """A non-blocking Unix stream socket listening on ``path`` (mode 0600). A socket left there
    by a process that died is replaced; one with a live listener raises :class:`IpcError`."""
    path = Path(path)
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
        else:
            raise IpcError(f"a server already listens on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(512)
    listener.setblocking(False)
    return listener


def connection_bytes(slot_count, slot_size):
    """Bytes of a connection's region with two rings of ``slot_count`` x ``slot_size``."""
    return conn.HEADER_BYTES + 2 * ring.region_bytes(slot_size, slot_count, 1)


def format_connection(slab, slot_count, slot_size, asymmetric):
    """Write a new connection's header and its two empty rings into ``slab``."""
    ring_bytes = ring.region_bytes(slot_size, slot_count, 1)
    header = slab[:conn.HEADER_BYTES]
    header[conn.VERSION_OFFSET:conn.VERSION_OFFSET + 4].view(np.uint32)[0] = conn.VERSION
    fields = header[conn.REQUEST_OFFSET:conn.CLOSE_REASON_OFFSET].view(np.int64)
    fields[:] = [conn.HEADER_BYTES, ring_bytes, conn.HEADER_BYTES + ring_bytes, ring_bytes]
    for offset in (conn.HEADER_BYTES, conn.HEADER_BYTES + ring_bytes):
        ring_slab = slab[offset:offset + ring_bytes]
        status = ring.format_slab(ring_slab, slot_size, slot_count, 1)
        if status != ring.OK:
            raise ValueError(f"ring geometry out of range: slot_count={slot_count}, slot_size={slot_size}")
        # Nobody parks on a connection ring's own doorbells (both sides park on their pages'):
        # in asymmetric mode each write and read checks them with a load and no fence.
        for bell in (ring.DATA_BELL_OFFSET, ring.SPACE_BELL_OFFSET):
            futex.set_asymmetric(ring_slab, bell, True)
    futex.set_asymmetric(slab, conn.SERVER_BELL, asymmetric)
    header[:8].view(np.uint64)[0] = conn.MAGIC


def _rings(slab):
    """``(control, request ring, response ring)`` views of a connection region, checked against its size."""
    header = slab[:conn.HEADER_BYTES]
    if int(header[:8].view(np.uint64)[0]) != conn.MAGIC:
        raise IpcError(f"not a connection region: magic {bytes(header[:8])!r}")
    version = int(header[conn.VERSION_OFFSET:conn.VERSION_OFFSET + 4].view(np.uint32)[0])
    if version != conn.VERSION:
        raise IpcError(f"connection layout version {version}, expected {conn.VERSION}")
    request_at, request_bytes, response_at, response_bytes = (
        int(value) for value in header[conn.REQUEST_OFFSET:conn.CLOSE_REASON_OFFSET].view(np.int64))
    for what, start, length in (("request", request_at, request_bytes), ("response", response_at, response_bytes)):
        if start < conn.HEADER_BYTES or length <= 0 or start % 64 or start + length > slab.size:
            raise IpcError(f"connection region: {what} ring at {start}, {length} bytes, outside its "
                           f"{slab.size} bytes")
    return header, slab[request_at:request_at + request_bytes], slab[response_at:response_at + response_bytes]


def _slab_list(items=()):
    listing = numba.typed.List.empty_list(types.uint8[::1])
    for item in items:
        listing.append(item)
    return listing


def _start_time(pid):
    """When process ``pid`` started, in clock ticks since boot (``/proc``), or ``None``."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _thread_cpu_seconds(native_id, ident=None):
    """User plus system CPU seconds of a thread of this process: from its CPU clock (to the
    nanosecond) while ``ident``, its ``threading`` identifier, is given and alive, else from
    ``/proc`` (in clock ticks); ``None`` when neither answers."""
    if ident is not None:
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, AttributeError):
            pass
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _release(fd, mapping):
    """Close a region's descriptor and mapping, where nothing still uses them."""
    for closer in (lambda: os.close(fd), mapping.close):
        try:
            closer()
        except (OSError, BufferError):
            pass


class _Connection:
    """The server's side of one connection."""

    def __init__(self, server, sock, peer, page):
        self.sock = sock
        self.peer_pid, self.peer_uid, _ = peer
        self.page = page
        size = connection_bytes(server.slot_count, server.slot_size)
        self.fd, self.mapping, self.slab = sealed_region(size, "connection")
        format_connection(self.slab, server.slot_count, server.slot_size, server.asymmetric)
        self.control, self.requests, self.responses = _rings(self.slab)
        # The states are opened before the client holds the region: their geometry is the server's.
        self.reader, self.writer = new_state(), new_state()
        for status in (ring.open_consumer(self.requests, 0, self.reader), ring.open_producer(self.responses, self.writer)):
            if status != ring.OK:
                raise IpcError(f"a new connection's ring did not open: {status_name(status)}")
        ring.set_evict(self.reader, False)  # see Client: a worker reads its requests in batches
        self.group = None
        self.row = -1

    def release(self):
        """Drop the mapping and the descriptor (arrays still using them keep the pages alive)."""
        _release(self.fd, self.mapping)
        self.fd = -1


class _ClientPage:
    """The page whose doorbell one client process parks on, for all its connections to a server."""

    def __init__(self, key, asymmetric):
        self.key = key
        self.fd, self.mapping, self.slab = sealed_region(_PAGE, "client")
        futex.set_asymmetric(self.slab, conn.CLIENT_PAGE_BELL, asymmetric)
        self.users = 0

    def waiters(self):
        """Waiters announced on the page's doorbell (what the client process wrote there)."""
        at = conn.CLIENT_PAGE_BELL + futex.WAITERS_OFFSET
        return int(self.slab[at:at + 4].view(np.uint32)[0]) & futex.WAITER_MASK

    def release(self):
        _release(self.fd, self.mapping)
        self.fd = -1


class _Group:
    """One I/O worker thread and the connections it serves."""

    def __init__(self, server, index, core):
        self.server = server
        self.index = index
        self.core = core
        self.page_fd, self.page_mapping, self.page = sealed_region(_PAGE, "group")
        self.control = np.zeros(conn.CONTROL_WORDS, np.int64)
        self.lock = threading.Lock()
        self.adds, self.closes = [], []
        self.rows = []  # row -> _Connection or None
        self.closed = Counter()
        self.messages_closed = 0
        self.wakes_closed = 0
        self.native_id = None
        self._dummy = np.zeros(conn.HEADER_BYTES, np.uint8)
        self._allocate(16)
        self.thread = threading.Thread(target=self._run, name=f"ringbook-ipc-worker-{index}", daemon=True)

    @property
    def active(self):
        return sum(connection is not None for connection in self.rows)

    def _allocate(self, capacity):
        """Grow the table and lists to ``capacity`` rows, keeping what the rows hold."""
        old = len(self.rows)
        table = np.zeros((capacity, conn.TABLE_COLUMNS), np.int64)
        states = np.zeros((capacity, 2 * ring.STATE_SIZE), np.int64)
        if old:
            table[:old], states[:old] = self.table, self.states
        self.table, self.states = table, states
        self.rows += [None] * (capacity - old)
        self.requests = _slab_list(self._dummy if c is None else c.requests for c in self.rows)
        self.responses = _slab_list(self._dummy if c is None else c.responses for c in self.rows)
        self.controls = _slab_list(self._dummy if c is None else c.control for c in self.rows)
        self.bells = _slab_list(self._dummy if c is None else c.page.slab for c in self.rows)

    def add(self, connection):
        with self.lock:
            self.adds.append(connection)
        self._changed()

    def close(self, connection, reason):
        with self.lock:
            self.closes.append((connection, reason))
        self._changed()

    def stop(self):
        self.control[conn.STOP] = 1
        futex.doorbell_wake(self.page, conn.GROUP_BELL)

    def _changed(self):
        self.control[conn.GENERATION] += 1
        futex.doorbell_wake(self.page, conn.GROUP_BELL)

    def _apply_changes(self):
        with self.lock:
            self.control[conn.SEEN_GENERATION] = self.control[conn.GENERATION]
            adds, self.adds = self.adds, []
            closes, self.closes = self.closes, []
        for connection, reason in closes:
            row = connection.row
            if connection.group is self and 0 <= row < len(self.rows) and self.rows[row] is connection \
                    and self.table[row, conn.ACTIVE] == 1:
                self.table[row, conn.ACTIVE] = 0
                self.table[row, conn.REASON] = reason
        for connection in adds:
            if None not in self.rows:
                self._allocate(2 * len(self.rows))
            row = self.rows.index(None)
            self.rows[row] = connection
            connection.row = row
            self.table[row] = 0
            self.states[row, :ring.STATE_SIZE] = connection.reader
            self.states[row, ring.STATE_SIZE:] = connection.writer
            self.requests[row], self.responses[row] = connection.requests, connection.responses
            self.controls[row] = connection.control
            self.bells[row] = connection.page.slab
            self.table[row, conn.ACTIVE] = 1
        self._reap()
        # Each client page is rung through the first of its rows.
        first_rows = {}
        for row, connection in enumerate(self.rows):
            if connection is not None:
                self.table[row, conn.PAGE_ROW] = first_rows.setdefault(id(connection.page), row)

    def _reap(self):
        """Release every connection the worker or the acceptor closed."""
        for row, connection in enumerate(self.rows):
            if connection is not None and self.table[row, conn.ACTIVE] == 0:
                reason = int(self.table[row, conn.REASON]) or conn.CLOSED_SERVER_STOPPED
                self.closed[conn.CLOSE_REASONS.get(reason, str(reason))] += 1
                self.messages_closed += int(self.table[row, conn.MESSAGES])
                self.wakes_closed += int(self.table[row, conn.WAKES])
                connection.control[conn.STATE_OFFSET:conn.STATE_OFFSET + 4].view(np.uint32)[0] = conn.SERVER_CLOSED
                futex.doorbell_wake(connection.page.slab, conn.CLIENT_PAGE_BELL)
                self.requests[row] = self.responses[row] = self.controls[row] = self.bells[row] = self._dummy
                self.rows[row] = None
                self.server._forget(connection)
                connection.release()

    def _run(self):
        self.native_id = threading.get_native_id()
        if self.core is not None:
            os.sched_setaffinity(0, {self.core})
        server = self.server
        inbox = np.zeros(server.slot_size, np.uint8)
        outbox = np.zeros(server.slot_size, np.uint8)
        stall_ns = int(server.stall_timeout * 1e9)
        while True:
            self._apply_changes()
            result = conn.serve(self.requests, self.responses, self.controls, self.bells, self.states, self.table,
                                self.page,
                                self.control, server.handler, inbox, outbox, stall_ns, SLICE_NS,
                                server.spins)
            if result == conn.SERVE_STOP:
                break
        for row in range(len(self.rows)):
            if self.table[row, conn.ACTIVE] == 1:
                self.table[row, conn.ACTIVE] = 0
                self.table[row, conn.REASON] = conn.CLOSED_SERVER_STOPPED
        self._reap()

    def stats(self):
        active_messages = int(sum(self.table[row, conn.MESSAGES] for row, c in enumerate(self.rows) if c))
        active_wakes = int(sum(self.table[row, conn.WAKES] for row, c in enumerate(self.rows) if c))
        return {"worker": self.index, "core": self.core, "connections": self.active,
                "messages": self.messages_closed + active_messages,
                "cpu_seconds": _thread_cpu_seconds(self.native_id, self.thread.ident if self.thread.is_alive() else None)
                if self.native_id else None,
                "parks": int(self.control[conn.PARKS]), "client_wakes": self.wakes_closed + active_wakes,
                "closed": dict(self.closed)}


class Server:
    """A server of shared-memory connections under ``name``.

    Parameters
    ----------
    name : str
        The socket is :func:`socket_path` ``(name)``.
    handler : numba dispatcher, optional
        ``handler(request, length, response) -> response length`` (``@njit``);
        :func:`ringbook.kernels.connection.echo` by default.
    workers : int
        I/O worker threads, pinned round-robin to the usable cores.
    slot_count, slot_size : int
        Each ring's geometry (slot_size includes the 24-byte slot header).
    stall_timeout : float
        Seconds a client may leave its response ring full before it is closed.
    spins : int
        Idle passes a worker spins before it parks.
    allowed_uids : iterable of int, optional
        Peers allowed in; this process's effective uid by default.
    asymmetric : bool
        Doorbells in asymmetric mode (:mod:`ringbook.kernels.futex`): writers skip the fence,
        and every park costs a ``membarrier``; worth it only where writers ring per message.
    """

    def __init__(self, name, handler=None, *, workers=1, slot_count=256, slot_size=128, stall_timeout=1.0,
                 spins=futex.DEFAULT_SPINS, allowed_uids=None, pin=True, asymmetric=False):
        self.name = name
        self.path = socket_path(name)
        self.handler = conn.echo if handler is None else handler
        self.slot_count, self.slot_size = slot_count, slot_size
        connection_bytes(slot_count, slot_size)
        if ring.check_geometry(slot_size, slot_count, 1) != ring.OK:
            raise ValueError(f"ring geometry out of range: slot_count={slot_count}, slot_size={slot_size}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.stall_timeout = stall_timeout
        self.spins = spins
        self.allowed_uids = {os.geteuid()} if allowed_uids is None else set(allowed_uids)
        # Fenced doorbells by default: a connection rings once per batch, so a fence there costs
        # less than the membarrier every park would cost in asymmetric mode.
        self.asymmetric = asymmetric and futex.register_asymmetric()
        cores = usable_cores() if pin else []
        self.groups = [_Group(self, i, cores[i % len(cores)] if cores else None) for i in range(workers)]
        self.refused = Counter()
        self.accepted = 0
        self._connections = {}  # socket fd -> _Connection
        self._pages = {}  # (pid, uid) -> _ClientPage
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = None
        self._acceptor = None

    def start(self):
        """Compile the worker loop, bind the socket (mode 0600) and start the threads."""
        self._compile()
        listener = listen(self.path)
        self._listener = listener
        for group in self.groups:
            group.thread.start()
        self._acceptor = threading.Thread(target=self._accept_loop, name="ringbook-ipc-acceptor", daemon=True)
        self._acceptor.start()
        return self

    def _compile(self):
        group = self.groups[0]
        control = np.zeros(conn.CONTROL_WORDS, np.int64)
        control[conn.STOP] = 1
        inbox = np.zeros(self.slot_size, np.uint8)
        conn.serve(group.requests, group.responses, group.controls, group.bells, group.states, group.table,
                   group.page,
                   control, self.handler, inbox, inbox.copy(), 0, 0, 0)

    def _accept_loop(self):
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        while not self._stopping.is_set():
            for key, _ in selector.select(0.05):
                if key.data is None:
                    self._accept(selector)
                else:
                    self._client_event(selector, key.fileobj, key.data)
            with self._lock:
                finished = [c for c in self._connections.values() if c.fd == -1]
            for connection in finished:
                self._drop_socket(selector, connection)
        for key in list(selector.get_map().values()):
            selector.unregister(key.fileobj)
            if key.data is not None:
                key.fileobj.close()
        selector.close()

    def _accept(self, selector):
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)
        peer = peer_credentials(sock)
        pid, uid, _ = peer
        if uid not in self.allowed_uids:
            self.refused[f"uid {uid}"] += 1
            try:
                sock.sendall(GREETING_REFUSED + f"uid {uid} (pid {pid}) is not allowed on {self.name}\n".encode())
            except OSError:
                pass
            sock.close()
            return
        page = None
        try:
            page = self._client_page(pid, uid)
            connection = _Connection(self, sock, peer, page)
        except (OSError, IpcError) as error:
            if page is not None:
                self._release_page(page)
            self.refused["error"] += 1
            sock.sendall(GREETING_REFUSED + f"{error}\n".encode())
            sock.close()
            return
        group = min(self.groups, key=lambda g: g.active + len(g.adds))
        connection.group = group
        try:
            socket.send_fds(sock, [GREETING_OK], [connection.fd, group.page_fd, page.fd])
        except OSError:
            sock.close()
            connection.release()
            self._release_page(page)
            return
        os.close(connection.fd)  # the client has its own; the mapping keeps the region
        connection.fd = -2
        sock.setblocking(False)
        with self._lock:
            self._connections[sock.fileno()] = connection
            self.accepted += 1
        selector.register(sock, selectors.EVENT_READ, connection)
        group.add(connection)

    def _client_event(self, selector, sock, connection):
        try:
            data = sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data.startswith(b"S"):  # a stats query
            try:
                sock.sendall(json.dumps(self.stats()).encode() + b"\n")
            except OSError:
                pass
            return
        if not data or data.startswith(b"C"):
            reason = conn.CLOSED_CLIENT_CLOSED if data else conn.CLOSED_CLIENT_GONE
            connection.group.close(connection, reason)
            self._drop_socket(selector, connection)

    def _drop_socket(self, selector, connection):
        with self._lock:
            if self._connections.pop(connection.sock.fileno(), None) is None:
                return
        try:
            selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()

    def _forget(self, connection):
        """A worker released ``connection``: the acceptor closes its socket (the client sees the end)."""
        self._release_page(connection.page)
        connection.fd = -1

    def _client_page(self, pid, uid):
        """The client page of process ``pid``, made at its first connection; one more user.

        Keyed by the process's start time too: a process that reuses the pid of one whose
        connections are not all reaped yet gets a page of its own, not one where a waiter
        killed in the old process may have left its announce."""
        key = (pid, uid, _start_time(pid))
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                page = self._pages[key] = _ClientPage(key, self.asymmetric)
            page.users += 1
            return page

    def client_pages(self):
        """``{(pid, uid, start time): (connections, waiters announced)}`` of the client pages
        in use (the waiters are what the process says: for inspection only)."""
        with self._lock:
            return {key: (page.users, page.waiters()) for key, page in self._pages.items()}

    def _release_page(self, page):
        """One user fewer; the page goes with its process's last connection (a later process with
        the same pid gets a page of its own)."""
        with self._lock:
            page.users -= 1
            if page.users > 0:
                return
            if self._pages.get(page.key) is page:
                del self._pages[page.key]
        page.release()

    def stats(self):
        """A plain dict: accepted, refused (by reason), and per worker its core, connections,
        messages served, CPU seconds, parks and connections closed by reason."""
        return {"name": self.name, "socket": str(self.path), "accepted": self.accepted,
                "refused": dict(self.refused), "workers": [group.stats() for group in self.groups]}

    def stop(self):
        """Close every connection, stop the threads and remove the socket."""
        self._stopping.set()
        for group in self.groups:
            group.stop()
        for group in self.groups:
            if group.thread.is_alive():
                group.thread.join()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._listener is not None:
            self._listener.close()
            self.path.unlink(missing_ok=True)
            self._listener = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class Client:
    """A connection to the server ``name``: :meth:`request` sends a message and waits for the reply.

    Raises :class:`IpcError` when the server refuses (its reason in the message),
    ``FileNotFoundError`` when no server listens under that name, and
    ``PermissionError`` when the socket is not this user's.
    """

    def __init__(self, name, *, timeout=5.0, spins=futex.DEFAULT_SPINS):
        self.name = name
        self.spins = spins
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(socket_path(name)))
            message, fds, _, _ = socket.recv_fds(self.sock, 256, 3)
        except BaseException:
            self.sock.close()
            raise
        try:
            if not message.startswith(GREETING_OK) or len(fds) != 3:
                reason = message[len(GREETING_REFUSED):].decode(errors="replace").strip() \
                    if message.startswith(GREETING_REFUSED) else f"unexpected greeting {message[:40]!r}"
                raise IpcError(f"server {name!r} refused the connection: {reason}", reason)
            region_fd, page_fd, bell_fd = fds
            self._mapping, self.slab = map_sealed(region_fd, "connection region", conn.HEADER_BYTES)
            self._page_mapping, self.group = map_sealed(page_fd, "group page", 64)
            self._bell_mapping, self.bell = map_sealed(bell_fd, "client page", 64)
            #: Which client page this is: the same for every connection of this process to the server.
            self.bell_id = _file_id(bell_fd)
            #: Which worker group serves this connection (connections of one group share its page).
            self.group_id = _file_id(page_fd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            self.sock.close()
            raise
        for fd in fds:
            os.close(fd)
        self.sock.settimeout(None)
        self.control, self.requests, self.responses = _rings(self.slab)
        self.writer, self.reader = new_state(), new_state()
        for status in (ring.open_producer(self.requests, self.writer), ring.open_consumer(self.responses, 0, self.reader)):
            if status != ring.OK:
                self.close()
                raise IpcError(f"connection ring did not open: {status_name(status)}")
        # Both sides read in batches, and a slot is written again a lap later by the same
        # peer: flushing each slot read only sends that peer's next write to memory.
        ring.set_evict(self.reader, False)
        if not futex.register_asymmetric():
            futex.set_asymmetric(self.control, conn.SERVER_BELL, False)  # this side fences instead
        self.capacity = int(self.reader[ring.STATE_CAPACITY])
        self._out = np.empty(self.capacity, np.uint8)

    @property
    def closed_reason(self):
        """Why the server closed this connection, or ``None`` while it is open."""
        if conn.connection_state(self.control) != conn.SERVER_CLOSED:
            return None
        code = int(self.control[conn.CLOSE_REASON_OFFSET:conn.CLOSE_REASON_OFFSET + 8].view(np.int64)[0])
        return conn.CLOSE_REASONS.get(code, f"reason {code}")

    def send(self, payload):
        """Send one request; ``False`` when the request ring is full."""
        data = np.frombuffer(payload, np.uint8) if not isinstance(payload, np.ndarray) else payload
        if data.size > self.capacity:
            raise ValueError(f"request of {data.size} bytes; a slot holds {self.capacity}")
        status = conn.send(self.requests, self.writer, np.ascontiguousarray(data).copy(), self.control, self.group)
        if status == ring.FULL:
            return False
        if status != ring.OK:
            raise IpcError(f"request ring: {status_name(status)}")
        return True

    def receive(self, timeout=5.0):
        """The next response as bytes; ``TimeoutError`` after ``timeout`` s (``None``: no limit)."""
        timeout_ns = -1 if timeout is None else int(timeout * 1e9)
        length = conn.receive_wait(self.responses, self.reader, self._out, self.control, self.bell, self.spins,
                                   timeout_ns)
        if length == conn.CLOSED:
            raise IpcError(f"server {self.name!r} closed the connection ({self.closed_reason})", self.closed_reason)
        if length == conn.TIMEOUT:
            raise TimeoutError(f"no response from {self.name!r} within {timeout} s")
        if length < 0:
            raise IpcError(f"response ring: {status_name(length)}")
        return self._out[:length].tobytes()

    def request(self, payload, timeout=5.0):
        """Send ``payload`` and return the response."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e18)
        while not self.send(payload):
            if time.monotonic() > deadline:
                raise TimeoutError(f"request ring of {self.name!r} stayed full for {timeout} s")
            time.sleep(0.0001)
        return self.receive(timeout)

    def server_stats(self, timeout=5.0):
        """The server's :meth:`Server.stats`, asked over this connection's socket."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(b"S")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise IpcError(f"server {self.name!r} closed the connection")
                reply += chunk
        finally:
            self.sock.settimeout(None)
        return json.loads(reply)

    def close(self):
        """Tell the server, and drop the region."""
        if self.sock is None:
            return
        self.control[conn.STATE_OFFSET:conn.STATE_OFFSET + 4].view(np.uint32)[0] = conn.CLIENT_CLOSED
        try:
            self.sock.send(b"C")
        except OSError:
            pass
        self.sock.close()
        self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
