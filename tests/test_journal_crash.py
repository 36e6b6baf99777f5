"""A writer process killed with SIGKILL at random moments, twenty times."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringbook.engine.journal import JournalReader, list_segments, verify
from tests.journal_child import expected_payload

PROJECT = Path(__file__).resolve().parents[1]


def start_writer(root):
    child = subprocess.Popen([sys.executable, "-m", "tests.journal_child", str(root)], cwd=PROJECT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.startswith("start "), (line, child.stderr.read() if child.poll() is not None else "")
    return child, int(line.split()[1])


@pytest.mark.slow
def test_sigkill_twenty_times(tmp_path):
    rng = random.Random(2026)
    root = tmp_path / "journal"
    acknowledged = -1
    read_before = 0
    cuts = 0
    for round_ in range(20):
        child, first = start_writer(root)
        # the new writer continues where the good records end
        assert first == read_before
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        for line in output.split():
            acknowledged = max(acknowledged, int(line))
        report = verify(root)
        assert report["bad_records"] == 0 and report["gaps"] == 0 and not report["errors"]
        cuts += report["torn_bytes"] > 0
        if not list_segments(root):
            assert acknowledged == -1  # killed before its first segment existed
            continue
        with JournalReader(root, "s") as reader:
            sequences = 0
            for record in reader:
                assert record.sequence == sequences
                assert bytes(record.payload) == expected_payload(record.sequence)
                sequences += 1
            assert sequences >= acknowledged + 1, f"round {round_}: acknowledged {acknowledged}, read {sequences}"
            read_before = sequences
    assert acknowledged > 0
    # Headers and indexes interrupted mid-write are cleared away by the next writer.
    left = set(root.rglob("*.tmp"))
    child, first = start_writer(root)
    child.kill()
    child.communicate()
    assert first == read_before and not left & set(root.rglob("*.tmp"))


@pytest.mark.slow
def test_tail_follows_a_writer_process(tmp_path):
    root = tmp_path / "journal"
    child, first = start_writer(root)
    try:
        deadline = time.monotonic() + 60
        while not list_segments(root) if root.exists() else True:
            assert time.monotonic() < deadline, "the writer made no segment"
            time.sleep(0.01)
        seen = 0
        with JournalReader(root, "s") as reader:
            for record in reader.tail(timeout=10):
                assert record.sequence == seen
                assert bytes(record.payload) == expected_payload(record.sequence)
                seen += 1
                if seen == 50_000:  # more than one segment of 2 MiB: the tail crossed a rotation
                    break
        assert seen == 50_000
    finally:
        child.kill()
        child.communicate()
