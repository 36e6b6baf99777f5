"""ringbook: a Numba-JIT numeric engine for market data.

The names a notebook reaches for first, from one place::

    import ringbook
    book = ringbook.new_book(n_symbols=1)
    feed = ringbook.read_binance("capture.gz")

Each name is imported on first use, so ``import ringbook.kernels.book`` from a
user's own ``@njit`` code loads nothing else. The embeddable kernels live in
:mod:`ringbook.kernels`, the runtime (feeds, rings, command line) in
:mod:`ringbook.engine`.
"""

import importlib

__version__ = "0.1.0"

#: public name -> (module, attribute in it)
_EXPORTS = {
    "Ring": ("ringbook.engine.ring", "Ring"),
    "Engine": ("ringbook.engine.engine", "Engine"),
    "Book": ("ringbook.kernels.book", "Book"),
    "new_book": ("ringbook.kernels.book", "new_book"),
    "Histogram": ("ringbook.kernels.hist", "Histogram"),
    "Window": ("ringbook.kernels.window", "Window"),
    "Summary": ("ringbook.kernels.summary", "Summary"),
    "parse_decimal": ("ringbook.kernels.fixed", "parse_decimal"),
    "format_decimal": ("ringbook.kernels.fixed", "format_decimal"),
    "Instruments": ("ringbook.kernels.events", "Instruments"),
    "empty_events": ("ringbook.kernels.events", "empty_events"),
    "replay_events": ("ringbook.kernels.replay", "replay_events"),
    "calibrate": ("ringbook.kernels.clock", "calibrate"),
    "Feed": ("ringbook.engine.feeds.source", "Feed"),
    "FeedError": ("ringbook.engine.feeds.source", "FeedError"),
    "read_lobster": ("ringbook.engine.feeds.lobster", "read_messages"),
    "read_lobster_orderbook": ("ringbook.engine.feeds.lobster", "read_orderbook"),
    "read_binance": ("ringbook.engine.feeds.binance", "read_capture"),
    "read_kalshi": ("ringbook.engine.feeds.kalshi", "read_messages"),
    "check_lobster": ("ringbook.engine.check", "check_lobster"),
    "check_binance": ("ringbook.engine.check", "check_binance"),
    "JournalWriter": ("ringbook.engine.journal", "JournalWriter"),
    "JournalReader": ("ringbook.engine.journal", "JournalReader"),
    "Flusher": ("ringbook.engine.flusher", "Flusher"),
    "replay_files": ("ringbook.engine.batch", "replay_files"),
    "ReplayError": ("ringbook.engine.batch", "ReplayError"),
    "snapshot_files": ("ringbook.engine.batch", "snapshot_files"),
    "Server": ("ringbook.engine.ipc", "Server"),
    "Client": ("ringbook.engine.ipc", "Client"),
    "Publisher": ("ringbook.engine.fanout", "Publisher"),
    "Subscriber": ("ringbook.engine.fanout", "Subscriber"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ringbook' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
