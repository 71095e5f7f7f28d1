"""Settlement's watch on its fee account: what /ready reports and when it warns."""

from __future__ import annotations

import logging

import pytest

from prosum_settlement.application import services


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def levels(caplog: pytest.LogCaptureFixture) -> list[int]:
    found = [r.levelno for r in caplog.records]
    caplog.clear()
    return found


def test_the_report_says_whether_the_fee_account_is_active() -> None:
    unknown = services.fee_account_report("operator", None)
    assert (unknown["status"], unknown["active"]) == ("unknown", False)
    assert "'operator' is unknown" in unknown["warning"]
    suspended = services.fee_account_report("operator", "suspended")
    assert (suspended["status"], suspended["active"]) == ("suspended", False)
    assert services.fee_account_report("operator", "active") == {
        "participant_id": "operator",
        "status": "active",
        "active": True,
    }


def test_the_watch_warns_on_changes_and_then_at_most_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    watch = services.FeeAccountWatch("operator", warn_every_s=60, clock=clock)
    caplog.set_level(logging.INFO, logger=services.__name__)
    assert not watch.observe(None, "at startup")
    assert levels(caplog) == [logging.WARNING]
    clock.now += 10
    assert not watch.observe(None, "building a batch of 3 trades")
    assert levels(caplog) == [], "not again within the interval"
    assert not watch.observe("pending", "building a batch of 3 trades")
    assert levels(caplog) == [logging.WARNING], "a change of status is told at once"
    clock.now += 60
    assert not watch.observe("pending", "building a batch of 3 trades")
    assert levels(caplog) == [logging.WARNING], "and again after the interval"
    assert watch.observe("active", "building a batch of 3 trades")
    assert levels(caplog) == [logging.INFO]
    assert watch.observe("active", "building a batch of 3 trades")
    assert levels(caplog) == []
    assert not watch.observe("suspended", "building a batch of 3 trades")
    assert levels(caplog) == [logging.WARNING]


def test_an_active_fee_account_at_startup_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=services.__name__)
    assert services.FeeAccountWatch("operator").observe("active", "at startup")
    assert caplog.records == []
