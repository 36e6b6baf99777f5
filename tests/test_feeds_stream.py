"""Streaming readers: the same events, lines and errors whatever the block size, and memory
bounded on a multi-GB input (peak RSS measured in a child process)."""

import gzip
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ringbook.engine import check
from ringbook.engine.feeds import binance, kalshi, lobster, synthetic
from ringbook.engine.feeds.source import FeedError, iter_blocks
from tests.test_feeds_binance import MESSAGES as BINANCE_MESSAGES, write_capture

#: The smallest limit: 4 KiB blocks, so a small file spans many.
SMALL = 2**16
CAPTURE = "binance/spot_btcusdt_20240808.gz"
AMZN = "lobster/AMZN_2012-06-21_34200000_57600000_{}_1.csv"


def assert_same_feed(found, expected):
    np.testing.assert_array_equal(found.events, expected.events)
    np.testing.assert_array_equal(found.lines, expected.lines)
    assert found.skipped_lines == expected.skipped_lines
    assert (found.ignored, found.dropped) == (expected.ignored, expected.dropped)
    if expected.records is not None:
        np.testing.assert_array_equal(found.records, expected.records)


@pytest.mark.parametrize("compress", [False, True])
def test_blocks_hold_every_line_once(tmp_path, compress):
    rng = np.random.default_rng(4)
    lines = [("y" * int(length)) for length in rng.integers(0, 900, 5000)]
    text = ("\r\n".join(lines) + "\n").encode()
    path = tmp_path / "lines"
    path.write_bytes(gzip.compress(text) if compress else text)
    seen = {}
    for block in iter_blocks(path, SMALL):
        for index in range(len(block)):
            seen[int(block.numbers[index])] = block.text(index).decode()
    assert seen == {number: line for number, line in enumerate(lines, 1) if line}


def test_gzip_members_and_padding_across_the_decompressors_pieces(tmp_path, monkeypatch):
    """The compressed bytes go to the decompressor in small pieces: members that end inside a
    piece or at its edge, and zero padding over several pieces, read as gzip reads them."""
    from ringbook.engine.feeds import source

    rng = np.random.default_rng(5)
    members = [gzip.compress(b"".join(b"%d,%d\n" % (k, int(value)) for value in rng.integers(0, 10**6, count)),
                             mtime=0) for k, count in enumerate((50, 1, 300))]
    data = b"".join(members) + b"\0" * 40
    path = tmp_path / "members.gz"
    path.write_bytes(data)
    expected = gzip.decompress(data)
    for piece in (7, len(members[0]), 64):
        monkeypatch.setattr(source, "_GZIP_INPUT", piece)
        assert b"".join(bytes(block.buffer) for block in iter_blocks(path, SMALL)) == expected, piece


def test_the_decompressor_takes_small_pieces_of_a_large_read(tmp_path, monkeypatch):
    """Each call takes at most _GZIP_INPUT compressed bytes, however large the file's reads:
    the input a call leaves is copied at every call, and a whole read left over again and
    again took as long as the decompression itself."""
    from ringbook.engine.feeds import source

    rng = np.random.default_rng(6)
    text = b"".join(b"%d\n" % value for value in rng.integers(0, 10**12, 200_000))
    path = tmp_path / "large.gz"
    path.write_bytes(gzip.compress(text, mtime=0))
    assert path.stat().st_size > 8 * source._GZIP_INPUT
    taken = []
    real = source.zlib_ng.decompressobj

    class Recording:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def decompress(self, data, limit=0):
            taken.append(len(data))
            return self.inner.decompress(data, limit)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(source.zlib_ng, "decompressobj", Recording)
    assert b"".join(bytes(block.buffer) for block in iter_blocks(path)) == text
    assert max(taken) <= source._GZIP_INPUT


def test_synthetic_files_read_the_same_in_small_blocks(tmp_path):
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=3000, levels=3, seed=2, header=True)
    assert_same_feed(lobster.read_messages(messages, memory_limit=SMALL), lobster.read_messages(messages))
    small, whole = lobster.read_orderbook(orderbook, memory_limit=SMALL), lobster.read_orderbook(orderbook)
    np.testing.assert_array_equal(small.bid_size, whole.bid_size)
    np.testing.assert_array_equal(small.records, whole.records)
    capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=2000, seed=2)
    for sync in (True, False):
        assert_same_feed(binance.read_capture(capture, sync=sync, memory_limit=SMALL),
                         binance.read_capture(capture, sync=sync))
    result, streamed = check.check_binance(capture), check.check_binance(capture, memory_limit=SMALL)
    assert result.to_dict() == streamed.to_dict() and result.checked > 1000
    result = check.check_lobster(messages, orderbook)
    assert result.to_dict() == check.check_lobster(messages, orderbook, memory_limit=SMALL).to_dict()
    assert result.checked == 3000 and result.mismatches == 0


def test_diffs_held_back_over_many_blocks(tmp_path):
    """Diffs before the snapshot span several blocks and are still placed right after it."""
    messages = BINANCE_MESSAGES[:3] * 60 + BINANCE_MESSAGES[3:]
    path = write_capture(tmp_path / "capture", messages)
    assert_same_feed(binance.read_capture(path, memory_limit=SMALL), binance.read_capture(path))


def test_diffs_beyond_the_hold_limit_are_released_in_file_order(tmp_path):
    messages = BINANCE_MESSAGES[:3] * 600 + BINANCE_MESSAGES[3:]
    path = write_capture(tmp_path / "capture", messages)
    feed = binance.read_capture(path, memory_limit=SMALL)
    # What did not fit was released in file order; only the last stretch was held back and synced.
    assert (np.diff(feed.lines[:1000]) >= 0).all() and 0 < feed.dropped < 600
    synced = binance.read_capture(path)  # within the default limit: held back and synced
    assert synced.dropped == 600 and (np.diff(synced.lines) < 0).any()


@pytest.mark.parametrize("reader", ["lobster", "binance", "kalshi"])
def test_errors_name_the_same_line_in_small_blocks(tmp_path, reader):
    if reader == "lobster":
        path, _ = synthetic.write_lobster(tmp_path, messages=3000, levels=1, seed=1)
        read = lobster.read_messages
        bad = 2718
        lines = path.read_text().splitlines(keepends=True)
        lines[bad - 1] = lines[bad - 1].replace(",", ",x", 1)
        path.write_text("".join(lines))
    elif reader == "binance":
        path = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=1500, seed=1)
        read = binance.read_capture
        lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
        bad = 1200
        lines[bad - 1] = lines[bad - 1].replace('"u":', '"u":x', 1).replace('"U":', '"U":x', 1)
        path.write_text("".join(lines))
    else:
        document = {"type": "trade", "msg": {"market_ticker": "K", "yes_price": 5, "count": 1,
                                             "taker_side": "yes", "ts": 1}}
        lines = [json.dumps(document) + "\n"] * 3000
        bad = 2999
        lines[bad - 1] = lines[bad - 1].replace('"yes"', '"maybe"')
        path = tmp_path / "kalshi.jsonl"
        path.write_text("".join(lines))
        read = kalshi.read_messages
    errors = []
    for limit in (SMALL, None):
        with pytest.raises(FeedError) as caught:
            read(path, memory_limit=limit)
        errors.append(caught.value)
        skipping = read(path, memory_limit=limit, skip_malformed=True)
        assert skipping.skipped_lines == [bad]
    assert errors[0].line == errors[1].line == bad and errors[0].field == errors[1].field
    assert_same_feed(errors[0].partial, errors[1].partial)


def test_real_files_read_the_same_in_small_blocks(shared_data):
    limit = 2**20  # the capture's snapshot line is 64 KB: lines up to a quarter of the limit
    for sync in (True, False):
        assert_same_feed(binance.read_capture(shared_data / CAPTURE, sync=sync, memory_limit=limit),
                         binance.read_capture(shared_data / CAPTURE, sync=sync))
    messages = shared_data / AMZN.format("message")
    assert_same_feed(lobster.read_messages(messages, memory_limit=SMALL), lobster.read_messages(messages))
    streamed = check.check_binance(shared_data / CAPTURE, memory_limit=limit)
    assert streamed.to_dict() == check.check_binance(shared_data / CAPTURE).to_dict()
    assert streamed.checked == 564 and streamed.mismatches == 0
    orderbook = shared_data / AMZN.format("orderbook")
    streamed = check.check_lobster(messages, orderbook, memory_limit=SMALL)
    assert streamed.checked == 57515 and streamed.mismatches == 0


_PEAK_RSS_CHILD = textwrap.dedent("""
    import os, resource, sys, threading
    from ringbook.engine.feeds import binance, source

    fifo, gib = sys.argv[1], float(sys.argv[2])
    snapshot = ('{"lastUpdateId":10,"bids":[["10.00000000","5.00000000"]],'
                '"asks":[["11.00000000","1.00000000"]]}')
    levels = ",".join('["%d.01000000","0.50000000"]' % (1000 + level) for level in range(10))
    diff = ('{"stream":"x@depth","data":{"e":"depthUpdate","E":1700000000000,"s":"TEST","U":11,'
            '"u":12,"b":[%s],"a":[]}}' % levels)
    line = ("1700000000000000000 " + diff + "\\n").encode()
    block = line * (2**20 // len(line))
    repeats = int(gib * 2**30 // len(block))

    def write():
        with open(fifo, "wb") as out:
            out.write(("1700000000000000000 " + snapshot + "\\n").encode())
            for _ in range(repeats):
                out.write(block)

    # Compile and warm up on a small capture first: only the stream's own memory is measured.
    small = fifo + ".small"
    with open(small, "wb") as out:
        out.write(("1 " + snapshot + "\\n").encode() + block[:100 * len(line)])
    assert len(binance.read_capture(small)) == 1000 + 4
    os.remove(small)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    writer = threading.Thread(target=write)
    writer.start()
    events = 0
    for chunk in binance.iter_capture(fifo):
        events += len(chunk)
    writer.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lines = repeats * (len(block) // len(line))
    print(events, lines, repeats * len(block), before, peak)
""")


@pytest.mark.slow
def test_memory_stays_bounded_on_a_multi_gb_capture(tmp_path):
    """A 2 GiB capture, written into a FIFO as it is read (never stored): peak RSS grows by
    less than the default memory limit, and every event comes out."""
    import os

    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, str(fifo), "2"], capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    events, lines, size, before, peak = map(int, result.stdout.split())
    assert size >= 2 * 2**30 - 2**20
    assert events == 10 * lines + 4  # ten levels a diff, and the snapshot's four events
    from ringbook.engine.feeds.source import MEMORY_LIMIT
    assert peak - before < MEMORY_LIMIT, f"peak RSS grew by {(peak - before) / 2**20:.0f} MiB"


def test_memory_limit_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "capture"
    path.write_bytes(b"1 " + b"x" * 2**17 + b"\n")
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "256K")
    with pytest.raises(FeedError, match="longer than 65536 bytes"):
        binance.read_capture(path)
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="RINGBOOK_MEMORY_LIMIT='lots'"):
        binance.read_capture(path)
    monkeypatch.setenv("RINGBOOK_MEMORY_LIMIT", "1024")
    with pytest.raises(ValueError, match="at least"):
        binance.read_capture(path)
