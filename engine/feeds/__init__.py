"""File readers: exchange data files into arrays of normalized events.

Each reader returns a :class:`~engine.feeds.source.Feed` (the events, the
line each came from, the instrument table) and raises
:class:`~engine.feeds.source.FeedError` at a malformed line, naming the file,
the 1-based line and the field, unless ``skip_malformed=True``, which skips
and lists such lines instead.

- :func:`engine.feeds.lobster.read_messages`, :func:`engine.feeds.lobster.read_orderbook`:
  LOBSTER message and orderbook files.
- :func:`engine.feeds.binance.read_capture`: Binance raw captures
  (``<local ns> <json>`` lines), synced as Binance documents.
- :func:`engine.feeds.kalshi.read_messages`: Kalshi ``ticker`` and ``trade`` messages.
- :mod:`engine.feeds.synthetic`: a simulated market written in the LOBSTER and
  Binance formats, for examples and tests without real data.
"""

from engine.feeds.source import Feed, FeedError

__all__ = ["Feed", "FeedError"]
