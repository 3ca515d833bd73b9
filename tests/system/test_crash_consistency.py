"""Crash consistency, short version: bench/crash_test.py for a few seconds of load with a
gunicorn worker SIGKILLed and PostgreSQL stopped with an immediate shutdown mid-load."""

from __future__ import annotations

import pytest

from bench.crash_test import run

# Not in the everyday loop (-m "not slow"): gunicorn and PostgreSQL crashed under load.
pytestmark = pytest.mark.slow


def test_every_acknowledged_write_survives_crashes_exactly_once() -> None:
    lines: list[str] = []
    report = run(seconds=6, clients=8, say=lines.append)
    print(lines, report)
    assert report.worker_killed is not None and report.postgres_restarted
    assert report.sent > 300
    assert report.replayed > 0, "the crashes should have cost some requests their answer"
    assert report.still_failing == 0
    assert report.found == report.expected
    assert sum(report.expected.values()) == report.sent  # after replay, all acknowledged
    assert report.violations == []
