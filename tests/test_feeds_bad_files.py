"""Bad files: every reader, and `ringbook check`, names the file (and the line where there is one)
in a FeedError and exits 2; never a traceback, never a silent OK.

The class is covered rather than the examples: every truncation point of a gzip
file, byte flips anywhere in it, every reader, the CLI for each format.
"""

import gzip
import zlib
import json
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ringbook.engine import check, cli
from ringbook.engine.feeds import binance, kalshi, lobster, synthetic
from ringbook.engine.feeds.source import FeedError
from tests.test_feeds_binance import MESSAGES as BINANCE_MESSAGES, SNAPSHOT, write_capture
from tests.test_feeds_kalshi import TICKER, TRADE, write_lines
from tests.test_feeds_lobster import MESSAGES as LOBSTER_MESSAGES

ORDERBOOK = "5859400,200,5853300,18\n5859400,100,5853300,18\n"


def lobster_messages(path, text=LOBSTER_MESSAGES):
    path.write_text(text)
    return path


def lobster_orderbook(path, text=ORDERBOOK):
    path.write_text(text)
    return path


def kalshi_messages(path):
    return write_lines(path, [TICKER, TRADE, TRADE])


#: reader name -> (write a good file at a path, read a path)
READERS = {
    "lobster_messages": (lobster_messages, lobster.read_messages),
    "lobster_orderbook": (lobster_orderbook, lobster.read_orderbook),
    "binance": (lambda path: write_capture(path, BINANCE_MESSAGES), binance.read_capture),
    "kalshi": (kalshi_messages, kalshi.read_messages),
}


def gzipped(tmp_path, name):
    """A good file of reader ``name``, gzipped: (path, compressed bytes)."""
    write, _ = READERS[name]
    plain = write(tmp_path / f"{name}.txt")
    data = gzip.compress(plain.read_bytes(), mtime=0)
    return tmp_path / f"{name}.gz", data


def assert_names_file(error, path):
    assert str(path) in str(error) and error.path == str(path)


@pytest.mark.parametrize("name", READERS)
def test_every_truncation_of_a_gzip_file_is_a_named_error(tmp_path, name):
    path, data = gzipped(tmp_path, name)
    _, read = READERS[name]
    path.write_bytes(data)
    read(path)  # whole: fine
    for cut in range(2, len(data)):  # from the two magic bytes on, it is a gzip file
        path.write_bytes(data[:cut])
        with pytest.raises(FeedError) as caught:
            read(path)
        assert_names_file(caught.value, path)
        assert "gzip" in caught.value.reason or "empty" in caught.value.reason, (cut, caught.value)


@pytest.mark.parametrize("name", READERS)
def test_bare_header_and_bad_checksum(tmp_path, name):
    path, data = gzipped(tmp_path, name)
    _, read = READERS[name]
    path.write_bytes(data[:10])
    with pytest.raises(FeedError, match="truncated gzip") as caught:
        read(path)
    assert caught.value.line == 1
    crc = bytearray(data)
    crc[-8] ^= 0x01  # the CRC32 of the trailer
    path.write_bytes(bytes(crc))
    with pytest.raises(FeedError, match="checksum mismatch") as caught:
        read(path)
    assert_names_file(caught.value, path)
    assert caught.value.line is not None


@pytest.mark.parametrize("name", READERS)
def test_a_gzip_file_cut_short_names_the_line_its_text_reached(tmp_path, name):
    path, data = gzipped(tmp_path, name)
    _, read = READERS[name]
    cut = len(data) * 2 // 3
    path.write_bytes(data[:cut])
    with pytest.raises(FeedError, match="truncated gzip") as caught:
        read(path)
    assert caught.value.line == zlib.decompressobj(wbits=31).decompress(data[:cut]).count(b"\n") + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(READERS)), position=st.integers(0, 10**6), mask=st.integers(1, 255))
@example(name="binance", position=405, mask=2)  # padding bits of the last deflate byte: still whole
@example(name="lobster_orderbook", position=1187, mask=4)
def test_a_flipped_byte_in_gzip_data_is_a_named_error(tmp_path, name, position, mask):
    path, data = gzipped(tmp_path, name)
    _, read = READERS[name]
    # Bytes 3..9 are the header's flags (FTEXT is a mere hint), time, compressor flags and OS:
    # no check covers them.
    position = position % len(data)
    if 3 <= position <= 9:
        position = 10
    damaged = bytearray(data)
    damaged[position] ^= mask
    path.write_bytes(bytes(damaged))
    try:
        intact = gzip.decompress(bytes(damaged)) == gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        intact = False
    if intact:
        # The flip hit padding bits after the last deflate block, which nothing reads: the file is whole.
        got, want = read(path), read_original(tmp_path, name)
        rows = (lambda result: result.events) if hasattr(want, "events") else (lambda result: result.bid_price)
        assert np.array_equal(rows(got), rows(want))
        return
    with pytest.raises(FeedError) as caught:
        read(path)
    assert_names_file(caught.value, path)


def read_original(tmp_path, name):
    write, read = READERS[name]
    path = tmp_path / f"original-{name}"
    write(path)
    return read(path)


@pytest.mark.parametrize("name", READERS)
@pytest.mark.parametrize("content", [b"", b"\n\n\r\n", gzip.compress(b"", mtime=0), gzip.compress(b"\n", mtime=0)],
                         ids=["empty", "blank lines", "gzip of nothing", "gzip of a blank line"])
def test_empty_files_are_errors(tmp_path, name, content):
    _, read = READERS[name]
    path = tmp_path / "empty"
    path.write_bytes(content)
    with pytest.raises(FeedError, match="empty") as caught:
        read(path)
    assert_names_file(caught.value, path)


@pytest.mark.parametrize("name", ["lobster_messages", "lobster_orderbook"])
def test_a_lobster_file_with_only_a_header_is_empty(tmp_path, name):
    _, read = READERS[name]
    path = tmp_path / "header.csv"
    path.write_text("Time,Type,OrderId,Size,Price,Direction\n")
    with pytest.raises(FeedError, match="empty"):
        read(path)


@pytest.mark.parametrize("name", READERS)
@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null", "directory", "missing"])
def test_devices_directories_and_missing_files_are_refused(tmp_path, name, target):
    _, read = READERS[name]
    if target == "directory":
        target = tmp_path
    elif target == "missing":
        target = tmp_path / "missing.csv"
    with pytest.raises(FeedError) as caught:
        read(target)
    assert_names_file(caught.value, target)
    assert caught.value.line is None


def feed_fifo(path, data):
    """Make ``path`` a FIFO and write ``data`` into it from a thread."""
    os.mkfifo(path)

    def write():
        with open(path, "wb") as fifo:
            fifo.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


@pytest.mark.parametrize("name", READERS)
@pytest.mark.parametrize("compress", [False, True])
def test_a_fifo_is_read_as_a_stream(tmp_path, name, compress):
    write, read = READERS[name]
    plain = write(tmp_path / "plain")
    expected = read(plain)
    data = plain.read_bytes()
    writer = feed_fifo(tmp_path / "fifo", gzip.compress(data) if compress else data)
    found = read(tmp_path / "fifo")
    writer.join(5)
    if name == "lobster_orderbook":
        np.testing.assert_array_equal(found.ask_price, expected.ask_price)
    else:
        np.testing.assert_array_equal(found.events, expected.events)
    np.testing.assert_array_equal(found.lines, expected.lines)


def test_a_line_without_end_is_bounded(tmp_path):
    path = tmp_path / "capture"
    path.write_bytes(b"1 " + b"x" * (2**20 + 10))
    with pytest.raises(FeedError, match="a line longer than") as caught:
        binance.read_capture(path, memory_limit=2**20)
    assert caught.value.line == 1


# LOBSTER times going backwards

def backwards_messages(tmp_path, line):
    lines = LOBSTER_MESSAGES.splitlines()
    lines[line - 1] = "34200.0," + lines[line - 1].split(",", 1)[1]  # before line 1's time
    return lobster_messages(tmp_path / "messages.csv", "\n".join(lines) + "\n")


@pytest.mark.parametrize("line", [2, 5, 9])
def test_lobster_time_going_backwards_names_the_line(tmp_path, line):
    path = backwards_messages(tmp_path, line)
    with pytest.raises(FeedError) as caught:
        lobster.read_messages(path)
    assert caught.value.line == line and caught.value.field == "time"
    assert "backwards: 34200.000000000 after" in caught.value.reason
    assert len(caught.value.partial) == line - 1
    feed = lobster.read_messages(path, skip_malformed=True)
    assert len(feed) == 9 and feed.skipped_lines == []
    assert [number for number, _ in feed.warnings] == [line]


def test_lobster_time_going_backwards_across_blocks(tmp_path):
    rows = [f"{34200 + index // 3}.{index % 3},1,{index + 1},10,5853300,1" for index in range(20000)]
    rows[12345] = "34200.5,1,7,10,5853300,1"
    path = lobster_messages(tmp_path / "messages.csv", "\n".join(rows) + "\n")
    for limit in (2**16, None):
        with pytest.raises(FeedError) as caught:
            lobster.read_messages(path, memory_limit=limit)
        assert caught.value.line == 12346 and len(caught.value.partial) == 12345
        # The row after it goes forward again: with skip_malformed, one warning only.
        assert [line for line, _ in lobster.read_messages(path, memory_limit=limit,
                                                          skip_malformed=True).warnings] == [12346]


def test_check_counts_backwards_times_as_warnings(tmp_path, capsys):
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=50, levels=2, seed=3)
    lines = messages.read_text().splitlines(keepends=True)
    first_time = lines[0].split(",", 1)[0]
    lines[20] = first_time + "," + lines[20].split(",", 1)[1]
    messages.write_text("".join(lines))
    status = cli.main(["check", "--format", "lobster", str(messages), "--orderbook", str(orderbook)])
    captured = capsys.readouterr()
    assert status == 2 and "line 21" in captured.err and "backwards" in captured.err
    status = cli.main(["check", "--format", "lobster", str(messages), "--orderbook", str(orderbook),
                       "--skip-malformed"])
    out = capsys.readouterr().out
    assert "warnings        1 (first: line 21: time goes backwards" in out


# Binance prices as JSON numbers

def bare_numbers(message):
    """The message with every price and quantity string written as a bare JSON number."""
    document = json.loads(message)
    data = document.get("data", document)
    for key in ("b", "a", "bids", "asks", "p", "q", "B", "A"):
        if isinstance(data.get(key), list):
            data[key] = [[f"@@{price}@@", f"@@{quantity}@@"] for price, quantity in data[key]]
        elif isinstance(data.get(key), str):
            data[key] = f"@@{data[key]}@@"
    return json.dumps(document).replace('"@@', "").replace('@@"', "")


def test_binance_numbers_read_as_their_text(tmp_path):
    strings = write_capture(tmp_path / "strings", BINANCE_MESSAGES)
    numbers = write_capture(tmp_path / "numbers", [bare_numbers(message) for message in BINANCE_MESSAGES])
    assert '"b": [[10.50000000, 2.00000000]]' in numbers.read_text()
    for sync in (False, True):
        np.testing.assert_array_equal(binance.read_capture(numbers, sync=sync).events,
                                      binance.read_capture(strings, sync=sync).events)


@pytest.mark.parametrize("levels, field", [
    ('[[1e-05, "1.0"]]', "b"),             # exponent notation: a float printer's, refused
    ('[["10.0", "1.0", "2.0"]]', "b"),     # three numbers in a level
    ('[["10.0"], ["1.0"]]', "b"),          # one number a level
    ('[["10.0", true]]', "b"),
])
def test_binance_levels_must_be_exact_pairs(tmp_path, levels, field):
    message = ('{"e":"depthUpdate","E":1700000000001,"s":"TEST","U":11,"u":12,"b":%s,"a":[]}' % levels)
    path = write_capture(tmp_path / "capture", [SNAPSHOT, message])
    with pytest.raises(FeedError) as caught:
        binance.read_capture(path)
    assert caught.value.line == 2 and caught.value.field == field


def test_binance_ticker_price_as_a_number(tmp_path):
    ticker = '{"u":12,"s":"TEST","b":10.5,"B":"2.00000000","a":11,"A":3}'
    feed = binance.read_capture(write_capture(tmp_path / "capture", [ticker]))
    assert feed.events["price"].tolist() == [1050000000, 1100000000]
    assert feed.events["quantity"].tolist() == [200000000, 300000000]


# ringbook check: exit 2 and a named file for every bad input

def run(capsys, *args):
    status = cli.main(["check", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("fault", ["empty", "truncated", "bare_header", "corrupt", "checksum", "device"])
@pytest.mark.parametrize("which", ["lobster", "orderbook", "binance"])
def test_check_exits_2_naming_the_bad_file(tmp_path, capsys, fault, which):
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=200, levels=2, seed=5)
    capture = synthetic.write_binance_capture(tmp_path / "capture.gz", diffs=50, seed=5)
    bad = {"lobster": messages, "orderbook": orderbook, "binance": capture}[which]
    data = bad.read_bytes()
    data = data if data[:2] == b"\x1f\x8b" else gzip.compress(data)
    if fault == "device":
        bad = "/dev/zero"
    else:
        bad = tmp_path / f"bad_{which}.gz"
        damaged = {"empty": b"", "truncated": data[:len(data) // 2], "bare_header": data[:10],
                   "corrupt": data[:20] + bytes(255 - byte for byte in data[20:40]) + data[40:],
                   "checksum": data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]}[fault]
        bad.write_bytes(damaged)
    if which == "binance":
        args = ["--format", "binance", bad]
    elif which == "lobster":
        args = ["--format", "lobster", bad, "--orderbook", orderbook]
    else:
        args = ["--format", "lobster", messages, "--orderbook", bad]
    status, out, err = run(capsys, *args, "--json")
    assert status == 2, (out, err)
    assert f"ringbook check: {bad}" in err and "Traceback" not in err
    assert str(bad) in out and '"error"' in out


def test_check_refuses_an_empty_orderbook(tmp_path, capsys):
    messages, orderbook = synthetic.write_lobster(tmp_path, messages=20, levels=2, seed=5)
    orderbook.write_text("")
    status, out, err = run(capsys, "--format", "lobster", messages, "--orderbook", orderbook)
    assert status == 2 and "empty" in err and str(orderbook) in err
    messages.write_text("")
    status, out, err = run(capsys, "--format", "lobster", messages)
    assert status == 2 and "empty" in err and str(messages) in err


def test_api_check_raises_feed_error_for_empty_files(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(FeedError, match="empty"):
        check.check_lobster(path)
    with pytest.raises(FeedError, match="empty"):
        check.check_binance(path)


@pytest.mark.parametrize("kind", ["orderbook_width", "brackets"])
def test_memory_bombs_stay_within_the_limit(tmp_path, kind):
    """A first orderbook row of 40,000 fields over many short rows, a capture line of brackets:
    the memory a read takes stays within its limit (numpy's allocations, traced)."""
    import tracemalloc

    limit = 32 * 2**20
    path = tmp_path / kind
    if kind == "orderbook_width":
        path.write_bytes(b"1," * 39999 + b"1\n" + b"1,2,3,4\n" * 2_000_000)
        read = lobster.read_orderbook
    else:
        path.write_bytes(b"1 {\"e\":\"depthUpdate\",\"b\":" + b"[" * (6 * 2**20) + b"\n")
        read = binance.read_capture
    warm = tmp_path / "warm"  # the compiled kernels are loaded before tracing
    warm.write_bytes(b"1,2,3,4\n" if kind == "orderbook_width" else
                     f"1 {BINANCE_MESSAGES[2]}\n".encode())
    read(warm)
    tracemalloc.start()
    try:
        with pytest.raises(FeedError) as caught:
            read(path, memory_limit=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.line in (1, 2)
    assert peak < limit, f"{peak / 2**20:.0f} MiB"
