"""File readers: exchange data files into arrays of normalized events.

Each reader returns a :class:`~ringbook.engine.feeds.source.Feed` (the events, the
line each came from, the instrument table) and raises
:class:`~ringbook.engine.feeds.source.FeedError` at a malformed line, naming the file,
the 1-based line and the field, unless ``skip_malformed=True``, which skips
and lists such lines instead. A file that cannot be read (empty, a damaged
gzip stream, a device) is a FeedError naming the file.

Readers stream (:mod:`ringbook.engine.feeds.source`): memory stays bounded by
``memory_limit`` whatever the size of the file, and each reader has an
``iter_*`` twin that yields the events chunk by chunk, for files larger than
memory. :mod:`ringbook.engine.feeds.json_index` is the njit JSON indexer the
JSON readers share.

- :func:`ringbook.engine.feeds.lobster.read_messages`, :func:`ringbook.engine.feeds.lobster.read_orderbook`
  (``iter_messages``, ``iter_orderbook``): LOBSTER message and orderbook files.
- :func:`ringbook.engine.feeds.binance.read_capture` (``iter_capture``): Binance raw captures
  (``<local ns> <json>`` lines), synced as Binance documents.
- :func:`ringbook.engine.feeds.kalshi.read_messages` (``iter_messages``): Kalshi ``ticker`` and
  ``trade`` messages.
- :mod:`ringbook.engine.feeds.synthetic`: a simulated market written in the LOBSTER and
  Binance formats, for examples and tests without real data.
"""

from ringbook.engine.feeds.source import Feed, FeedError

__all__ = ["Feed", "FeedError"]
