"""Compare a reader's output with the records of a reference in ``tests/naive.py``."""

import numpy as np


def assert_events_equal(feed, expected):
    """A reader's events equal the reference's dicts, field by field (``line``: the file line)."""
    assert len(feed) == len(expected)
    for name in expected[0]:
        wanted = np.array([event[name] for event in expected], np.int64)
        found = feed.lines if name == "line" else feed.events[name].astype(np.int64)
        np.testing.assert_array_equal(found, wanted, err_msg=name)
