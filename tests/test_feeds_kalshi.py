"""Kalshi ticker and trade reader: exact prices and sizes, real messages, errors."""

import json

import numpy as np
import pytest

from ringbook.engine.feeds import kalshi
from ringbook.engine.feeds.source import FeedError
from ringbook.kernels.events import ASK, BID, FLAG_BATCH_END, KIND_TOP_OF_BOOK, KIND_TRADE
from tests.naive import _fixed

TICKER = {"type": "ticker", "sid": 1, "msg": {
    "market_ticker": "KXTEST-26FEB13-B1.5", "price": 14, "yes_bid": 4, "yes_ask": 95,
    "price_dollars": "0.1400", "yes_bid_dollars": "0.0400", "yes_ask_dollars": "0.9550",
    "yes_bid_size_fp": "14.00", "yes_ask_size_fp": "84.50", "ts": 1770897976}}
TRADE = {"type": "trade", "sid": 2, "seq": 10, "msg": {
    "trade_id": "f851595a-6d92-424e-09f8-0d2669de70ae", "market_ticker": "KXTEST-26FEB13-B1.5",
    "yes_price": 77, "no_price": 23, "yes_price_dollars": "0.7700", "no_price_dollars": "0.2300",
    "count": 75, "count_fp": "75.00", "taker_side": "no", "ts": 1770897981}}


def write_lines(path, documents):
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in documents))
    return path


def test_ticker_and_trade(tmp_path):
    cents_only = {"type": "trade", "sid": 2, "msg": {"market_ticker": "KXOTHER", "yes_price": 61,
                                                      "count": 3, "taker_side": "yes", "ts": 5}}
    path = write_lines(tmp_path / "kalshi.jsonl",
                       [TICKER, TRADE, {"type": "subscribed", "msg": {}}, cents_only])
    feed = kalshi.read_messages(path)
    events = feed.events
    assert events["kind"].tolist() == [KIND_TOP_OF_BOOK, KIND_TOP_OF_BOOK, KIND_TRADE, KIND_TRADE]
    assert events["side"].tolist() == [BID, ASK, ASK, BID]
    assert events["price"].tolist() == [400, 9550, 7700, 6100]    # dollars at scale 4
    assert events["quantity"].tolist() == [1400, 8450, 7500, 300]  # contracts at scale 2
    assert events["flags"].tolist() == [0, FLAG_BATCH_END, FLAG_BATCH_END, FLAG_BATCH_END]
    assert events["sequence"].tolist() == [0, 0, 10, 0]
    assert events["exchange_ns"][0] == 1770897976 * 10**9
    assert events["symbol"].tolist() == [0, 0, 0, 1] and feed.instruments.name_of(1) == "KXOTHER"
    assert feed.lines.tolist() == [1, 1, 2, 4] and feed.ignored == 1


def test_local_time_prefix(tmp_path):
    path = tmp_path / "kalshi.jsonl"
    path.write_text(f"1770897976123456789 {json.dumps(TRADE)}\n")
    assert kalshi.read_messages(path).events["local_ns"].tolist() == [1770897976123456789]


@pytest.mark.parametrize("change, field", [
    (lambda d: d["msg"].pop("ts"), "ts"),
    (lambda d: d["msg"].update(yes_bid_dollars="0.04x"), "yes_bid_dollars"),
    (lambda d: d["msg"].update(yes_ask_size_fp="1.005"), "yes_ask_size_fp"),
    (lambda d: d["msg"].update(market_ticker="K" * 40), "market_ticker"),
])
def test_malformed(tmp_path, change, field):
    bad = json.loads(json.dumps(TICKER))
    change(bad)
    path = write_lines(tmp_path / "kalshi.jsonl", [TRADE, bad, TRADE])
    with pytest.raises(FeedError) as caught:
        kalshi.read_messages(path)
    assert caught.value.line == 2 and caught.value.field == field
    assert len(caught.value.partial) == 1
    feed = kalshi.read_messages(path, skip_malformed=True)
    assert feed.skipped_lines == [2] and len(feed) == 2


def test_not_json(tmp_path):
    path = write_lines(tmp_path / "kalshi.jsonl", [TRADE, "{not json"])
    with pytest.raises(FeedError, match="line 2: not JSON"):
        kalshi.read_messages(path)


def test_real_messages(shared_data):
    for name, kind, per_line in (("ticker", KIND_TOP_OF_BOOK, 2), ("trade", KIND_TRADE, 1)):
        path = shared_data / "kalshi" / f"kalshi_{name}.jsonl"
        feed = kalshi.read_messages(path)
        documents = [json.loads(line) for line in path.read_text().splitlines() if line]
        assert len(feed) == per_line * len(documents) and (feed.events["kind"] == kind).all()
        if name == "ticker":
            expected = [_fixed(d["msg"][key], 4) for d in documents
                        for key in ("yes_bid_dollars", "yes_ask_dollars")]
            sizes = [_fixed(d["msg"][key], 2) for d in documents
                     for key in ("yes_bid_size_fp", "yes_ask_size_fp")]
        else:
            expected = [_fixed(d["msg"]["yes_price_dollars"], 4) for d in documents]
            sizes = [_fixed(d["msg"]["count_fp"], 2) for d in documents]
            assert feed.events["sequence"].tolist() == [d["seq"] for d in documents]
        np.testing.assert_array_equal(feed.events["price"], expected)
        np.testing.assert_array_equal(feed.events["quantity"], sizes)
        names = {feed.instruments.name_of(s) for s in feed.events["symbol"].tolist()}
        assert names == {d["msg"]["market_ticker"] for d in documents}


@pytest.mark.parametrize("change, field", [
    (lambda d: d["msg"].update(ts=2**62), "ts"),
    (lambda d: d["msg"].update(ts=-1), "ts"),
    (lambda d: d["msg"].update(yes_price=2**62), "yes_price"),
    (lambda d: d["msg"].update(count=2**62), "count"),
])
def test_numbers_that_would_overflow_are_named(tmp_path, change, field):
    bad = json.loads(json.dumps(TRADE))
    for key in ("yes_price_dollars", "count_fp"):
        bad["msg"].pop(key)
    change(bad)
    path = write_lines(tmp_path / "kalshi.jsonl", [TRADE, bad])
    with pytest.raises(FeedError, match="out of range") as caught:
        kalshi.read_messages(path)
    assert caught.value.line == 2 and caught.value.field == field
    path.write_text(f"{10**30} {json.dumps(TRADE)}\n")
    with pytest.raises(FeedError) as caught:
        kalshi.read_messages(path)
    assert caught.value.field == "local_ns"
