"""OnceLogger against keys the network chooses: bounded memory, bounded WARNING lines."""

from __future__ import annotations

import logging

import pytest

from edge.logutil import MAX_ARG_CHARS, MAX_KEY_CHARS, OnceLogger

_LOGGER = logging.getLogger("tests.logutil")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_each_key_warns_once_then_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = OnceLogger(_LOGGER)
    for _ in range(3):
        log.warning("topic a", "dropped on %s", "a")
        log.warning("topic b", "dropped on %s", "b")
    assert len(warnings(caplog)) == 2
    assert log.count("topic a") == 3
    assert len(caplog.records) == 6


def test_a_client_cycling_through_topics_gets_a_bounded_number_of_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a full table was cleared, so every new key warned again, for ever (a gateway
    publishing on event/<random> filled the log at WARNING)."""
    caplog.set_level(logging.DEBUG)
    now = [0.0]
    log = OnceLogger(_LOGGER, max_keys=10, window_s=60.0, clock=lambda: now[0])
    for i in range(1000):
        log.warning(f"rejected event/x{i}", "dropped on %s", f"event/x{i}")
    assert len(warnings(caplog)) == 11  # ten keys, and one line saying the rest go to DEBUG
    assert "more than 10 distinct problems" in warnings(caplog)[-1]
    assert log.overflowed == 990
    assert len(caplog.records) == 1001  # nothing is lost at DEBUG
    assert len(log._seen) == 10
    caplog.clear()
    now[0] = 61.0  # a window later: new problems warn again
    log.warning("rejected status", "dropped on %s", "status")
    assert len(warnings(caplog)) == 1


def test_long_keys_and_arguments_are_cut(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = OnceLogger(_LOGGER)
    topic = "t" * 60_000
    log.warning(f"rejected {topic}", "dropped on %s", topic)
    log.warning(f"rejected {topic}x", "dropped on %s", topic)  # the same key once cut
    assert all(len(k) <= MAX_KEY_CHARS for k in log._seen)
    assert len(warnings(caplog)) == 1
    assert all(len(r.getMessage()) < MAX_ARG_CHARS + 200 for r in caplog.records)
    assert "(60000 characters)" in caplog.records[0].getMessage()
