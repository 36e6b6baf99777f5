"""A journal writer process for the crash tests: appends until killed.

``python -m tests.journal_child ROOT`` continues stream ``s`` of ROOT, prints
``start <sequence>``, then after every batch the last sequence written (so
the parent knows what was acknowledged before it kills the process).
"""

import sys
import tempfile

import numpy as np

from ringbook.engine.journal import JournalWriter

BATCH = 3000
WIDTH = 300


def payload_length(sequence):
    return 8 + (sequence * 7919) % (WIDTH - 8)


def expected_payload(sequence):
    length = payload_length(sequence)
    return sequence.to_bytes(8, "little") + bytes([sequence % 251]) * (length - 8)


def warm_up():
    """Compile (or load) the kernels before the parent may kill us, so every round runs them."""
    with tempfile.TemporaryDirectory() as scratch:
        with JournalWriter(scratch, "warm") as writer:
            writer.append_many(np.zeros((2, WIDTH), np.uint8), np.full(2, 8, np.int64), receive_ns=np.arange(2))


def main(root):
    warm_up()
    with JournalWriter(root, "s", segment_bytes=2 << 20, batch_bytes=4 << 20) as writer:
        print(f"start {writer.next_sequence}", flush=True)
        rows = np.zeros((BATCH, WIDTH), np.uint8)
        lengths = np.zeros(BATCH, np.int64)
        while True:
            first = writer.next_sequence
            for i in range(BATCH):
                payload = expected_payload(first + i)
                rows[i, :len(payload)] = np.frombuffer(payload, np.uint8)
                lengths[i] = len(payload)
            writer.append_many(rows, lengths, receive_ns=1_700_000_000 * 10**9 + first + np.arange(BATCH))
            print(writer.last_written_sequence, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
