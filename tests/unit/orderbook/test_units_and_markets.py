"""Prices, values and fees; market ids and their trading windows; the orderbook's settings."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from prosum_orderbook.adapters.config import OrderbookSettings
from prosum_orderbook.domain.cover import Reservation, open_value, order_reservation
from prosum_orderbook.domain.markets import (
    Fees,
    MarketIdError,
    Schedule,
    delivery_start,
    market_id_for,
    partition_of,
)
from prosum_orderbook.domain.units import (
    PriceError,
    format_price,
    grid_fee,
    parse_price,
    parse_rate,
    trade_value,
)


@pytest.mark.parametrize(
    ("text", "units"),
    [("240", 240_000), ("0.245", 245), ("0.001", 1), ("12.5", 12_500), (Decimal("7.10"), 7_100)],
)
def test_prices_are_exact_decimals_kept_as_milli_ecoin_per_kwh(text: str, units: int) -> None:
    assert parse_price(text) == units
    assert parse_price(format_price(units)) == units


@pytest.mark.parametrize("text", ["0", "-1", "0.0001", "abc", "NaN", "Infinity", "1000000.001"])
def test_prices_off_the_tick_not_positive_or_not_numbers_are_refused(text: str) -> None:
    with pytest.raises(PriceError):
        parse_price(text)


def test_a_zero_rate_is_a_fee_not_a_price() -> None:
    assert parse_rate("0") == 0
    assert format_price(0) == "0"


def test_values_and_fees_round_down_to_whole_ecoin() -> None:
    assert trade_value(2_000, parse_price("240")) == 480
    assert trade_value(1_999, parse_price("0.5")) == 0  # 0.9995 ecoin
    assert trade_value(3_333, parse_price("0.3")) == 0
    assert grid_fee(10_000, parse_price("0.15")) == 1


def test_a_bid_reserves_value_grid_fee_and_the_operator_fee_until_it_traded_once() -> None:
    fees = Fees(operator_fee=5, grid_fee_per_kwh=parse_price("2"))
    assert order_reservation("buy", 3_000, parse_price("240"), False, fees) == Reservation(
        0, 720 + 6 + 5
    )
    assert order_reservation("buy", 3_000, parse_price("240"), True, fees) == Reservation(0, 726)
    assert order_reservation("sell", 3_000, parse_price("240"), False, fees) == Reservation(
        3_000, 0
    )
    assert order_reservation("buy", 0, parse_price("240"), False, fees) == Reservation()
    assert open_value("buy", 3_000, parse_price("240")) == 720
    assert open_value("sell", 3_000, parse_price("240")) == 0


def test_a_market_is_named_by_the_start_of_its_quarter_hour() -> None:
    start = datetime(2026, 11, 21, 14, 15, tzinfo=UTC)
    assert market_id_for(start) == "2026-11-21T14:15Z"
    assert delivery_start("2026-11-21T14:15Z") == start
    for bad in ("2026-11-21T14:10Z", "2026-11-21 14:15", "2026-13-01T00:00Z", "x"):
        with pytest.raises(MarketIdError):
            delivery_start(bad)
    with pytest.raises(MarketIdError):
        market_id_for(start + timedelta(minutes=1))


def test_a_market_opens_ahead_and_closes_at_gate_closure() -> None:
    schedule = Schedule(open_ahead=timedelta(hours=24), gate_closure=timedelta(minutes=5))
    window = schedule.window("2026-11-21T14:00Z")
    assert window.gate_closure == datetime(2026, 11, 21, 13, 55, tzinfo=UTC)
    assert window.state_at(datetime(2026, 11, 20, 13, 59, tzinfo=UTC)) == "not_open"
    assert window.state_at(datetime(2026, 11, 20, 14, 0, tzinfo=UTC)) == "open"
    assert window.state_at(datetime(2026, 11, 21, 13, 54, 59, tzinfo=UTC)) == "open"
    assert window.state_at(datetime(2026, 11, 21, 13, 55, tzinfo=UTC)) == "closed"


def test_the_open_markets_at_a_moment_are_the_intervals_between_gate_closure_and_open_ahead() -> (
    None
):
    schedule = Schedule(open_ahead=timedelta(hours=1), gate_closure=timedelta(minutes=5))
    now = datetime(2026, 11, 21, 13, 56, tzinfo=UTC)
    # 14:00 closed at 13:55; 14:15 .. 14:45 open; 15:00 opens at 14:00
    assert schedule.open_markets(now) == [
        "2026-11-21T14:15Z",
        "2026-11-21T14:30Z",
        "2026-11-21T14:45Z",
    ]
    for market in schedule.open_markets(now):
        assert schedule.window(market).state_at(now) == "open"


def test_settings_have_their_own_prefix_and_refuse_a_window_that_closes_before_it_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROSUM_ORDERBOOK_GATE_CLOSURE_S", "600")
    monkeypatch.setenv("PROSUM_ORDERBOOK_GRID_FEE_PER_KWH", "0.015")
    monkeypatch.setenv("PROSUM_ORDERBOOK_MECHANISM", "call_auction")
    settings = OrderbookSettings()
    assert settings.schedule().gate_closure == timedelta(minutes=10)
    assert settings.defaults().fees == Fees(0, 15)
    assert settings.defaults().mechanism.value == "call_auction"
    monkeypatch.setenv("PROSUM_ORDERBOOK_OPEN_AHEAD_S", "600")
    with pytest.raises(ValueError, match="OPEN_AHEAD"):
        OrderbookSettings()
    monkeypatch.setenv("PROSUM_ORDERBOOK_OPEN_AHEAD_S", "86400")
    monkeypatch.setenv("PROSUM_ORDERBOOK_GRID_FEE_PER_KWH", "0.0001")
    with pytest.raises(ValueError, match="grid fee"):
        OrderbookSettings()


def test_consecutive_markets_go_to_consecutive_command_partitions() -> None:
    start = datetime(2026, 11, 21, 23, 0, tzinfo=UTC)
    ids = [market_id_for(start + timedelta(minutes=15 * n)) for n in range(12)]
    chosen = [partition_of(m, 6) for m in ids]
    assert sorted(chosen) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "evenly spread"
    assert all((b - a) % 6 == 1 for a, b in itertools.pairwise(chosen))
    assert partition_of(ids[0], 6) == partition_of(ids[0], 6)
    # any key gets a partition, always the same one
    assert partition_of("not-a-market", 6) == partition_of("not-a-market", 6) in range(6)
