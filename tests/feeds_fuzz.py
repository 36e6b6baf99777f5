"""Feed any bytes to every file reader: only a FeedError may come out.

:func:`exercise` is shared by ``tests/test_feeds_fuzz.py`` and by the
coverage-guided fuzzer this script runs with atheris. The first byte of an
input picks the reader (LOBSTER messages, LOBSTER orderbook, Binance, Kalshi),
whether malformed lines are skipped and whether the rest is gzipped; the rest
is the file. Seeds come from the real files in ``../shared/data``, read at run
time (nothing is copied into the repository)::

    python tests/feeds_fuzz.py -max_total_time=600 -rss_limit_mb=4096   # seeds: a temporary corpus
    python tests/feeds_fuzz.py -runs=100000 CORPUS_DIR       # or a corpus of your own

The files read and the seed corpus go to a temporary folder in ``$RINGBOOK_FUZZ_DIR``
(else in ``/dev/shm`` where there is one). A process that ends normally removes it; a
fuzzing run ends as libFuzzer exits, so a test gives it a folder of its own.
"""

import atexit
import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ringbook.engine.feeds import binance, kalshi, lobster
from ringbook.engine.feeds.source import FeedError

#: Reader of each choice, with the name the file gets (LOBSTER's name carries a date).
READERS = (
    ("TEST_2012-06-21_34200000_57600000_message_1.csv", lobster.read_messages),
    ("TEST_2012-06-21_34200000_57600000_orderbook_1.csv", lobster.read_orderbook),
    ("capture.txt", binance.read_capture),
    ("kalshi.jsonl", kalshi.read_messages),
)
#: The data files each reader's seeds come from, under ../shared/data.
SEED_FILES = (
    ("lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv",),
    ("lobster/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv",),
    ("binance/spot_btcusdt_20240808.gz",),
    ("kalshi/kalshi_ticker.jsonl", "kalshi/kalshi_trade.jsonl"),
)
SEED_LINES = 40
#: A small memory limit, so that inputs of some KB span several blocks (lines up to 128 KB).
MEMORY_LIMIT = 2**19
DIRECTORY = Path(tempfile.mkdtemp(prefix="ringbook_feeds_fuzz_", dir=os.environ.get("RINGBOOK_FUZZ_DIR") or (
    "/dev/shm" if os.path.isdir("/dev/shm") else None)))
atexit.register(shutil.rmtree, DIRECTORY, True)


def exercise(data):
    """Read ``data`` as the file of the reader its first byte picks; FeedError is the only way out."""
    if not data:
        return None
    choice, body = data[0], data[1:]
    name, read = READERS[choice % len(READERS)]
    skip_malformed = bool(choice & 4)
    if choice & 8:
        body = gzip.compress(body, mtime=0)
    path = DIRECTORY / name
    path.write_bytes(body)
    try:
        return read(path, skip_malformed=skip_malformed, memory_limit=MEMORY_LIMIT)
    except FeedError as error:
        assert error.path == str(path)
        return error


def seeds(shared_data):
    """Inputs built from the first lines of each real file (gzip flag off and on)."""
    inputs = []
    for choice, files in enumerate(SEED_FILES):
        for file in files:
            path = Path(shared_data) / file
            if not path.is_file():
                continue
            text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            head = b"".join(text.splitlines(keepends=True)[:SEED_LINES])
            inputs += [bytes([choice]) + head, bytes([choice | 8]) + head, bytes([choice | 4]) + head]
    return inputs


def _write_corpus(shared_data):
    corpus = DIRECTORY / "corpus"
    corpus.mkdir()
    for index, data in enumerate(seeds(shared_data)):
        (corpus / f"seed_{index}").write_bytes(data)
    return corpus


def _instrument(atheris):
    """Instrument the readers' plain Python functions for coverage.

    The njit kernels are left alone (their bytecode is compiled, and an
    instrumented one would not compile); their branches show through the
    statuses the Python around them takes apart.
    """
    import inspect

    from ringbook.engine.feeds import json_index, source

    for module in (binance, kalshi, lobster, json_index, source):
        for value in vars(module).values():
            members = vars(value).values() if inspect.isclass(value) else [value]
            for member in members:
                if inspect.isfunction(member) and member.__module__ == module.__name__:
                    atheris.instrument_func(member)


def main(argv):
    import atheris

    from tests.conftest import SHARED_DATA

    _instrument(atheris)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        argv = argv + [str(_write_corpus(SHARED_DATA))]
    atheris.Setup(argv, exercise)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv)
