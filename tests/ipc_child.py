"""What the child processes of tests/test_ipc.py run (a spawned child imports only this)."""

import os
import sys
import time

from ringbook.engine import ipc


def request_forever(name, ready):
    """Send requests and read their echoes until killed."""
    client = ipc.Client(name)
    client.request(b"first")
    ready.put(os.getpid())
    while True:
        client.request(b"again and again")


def never_read(name, ready):
    """Send requests without ever reading a response, then sleep until killed."""
    client = ipc.Client(name)
    sent = 0
    while client.send(b"unread"):
        sent += 1
    ready.put(sent)
    while True:
        time.sleep(1)


def as_other_uid(name, uid, directory):
    """Exit 10 when the socket is out of reach, 11 when the server refused, 12 when it let us in."""
    os.environ["RINGBOOK_IPC_DIR"] = directory
    os.setgid(uid)
    os.setuid(uid)
    try:
        ipc.Client(name).close()
    except PermissionError:
        os._exit(10)
    except ipc.IpcError as error:
        os._exit(11 if "not allowed" in str(error) else 13)
    except BaseException as error:  # anything else is a failure the parent reports
        print(repr(error), file=sys.stderr)
        os._exit(14)
    os._exit(12)


def subscribe(name, policy, count, pause, ready):
    """Subscribe, say so, then read ``count`` events (or until the end), sleeping ``pause`` s
    after each batch; put the summary and whether the sequences only grew."""
    from ringbook.engine import fanout
    subscriber = fanout.Subscriber(name, policy)
    ready.put("subscribed")
    rising = True
    last = -1
    while subscriber.received < count:
        subscriber.receive_batch(max_records=256, timeout=20)
        if subscriber.ended:
            break
        sequences = subscriber.sequences  # the stream's, not the exchange's
        rising = rising and bool((sequences[1:] > sequences[:-1]).all()) and sequences[0] > last
        last = int(sequences[-1])
        if pause:
            time.sleep(pause)
    ready.put({**subscriber.summary(), "rising": rising, "last": last})


def park_for_a_reply(name, ready):
    """Connect, and wait for a reply to a request never sent (parked on the client page) until killed."""
    client = ipc.Client(name, spins=0)
    ready.put(os.getpid())
    client.receive(timeout=None)
