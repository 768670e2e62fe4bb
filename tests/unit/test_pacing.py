"""The model gate's pacing model: pure functions of a state and instants."""

from __future__ import annotations

import pytest

from scheduler_service.runs.pacing import (
    BACKOFF,
    FORGET,
    GROWTH,
    MIN_RATE,
    Pacing,
    admit,
    allowed_rate,
    rate_before,
    refuse,
)


def test_slow_start_spaces_starts_at_the_floor_then_at_twice_the_starts_made() -> None:
    state = Pacing()
    starts = [admit(state, 0.0, floor=10) for _ in range(7)]
    assert starts == pytest.approx([i / 10 for i in range(7)])
    # At 0.6 six starts were made in the last second: twelve a second are allowed.
    assert admit(state, 0.0, floor=10) == pytest.approx(0.6 + 1 / 12)
    state = Pacing(recent=[i / 20 for i in range(20)])  # twenty in the last second
    assert allowed_rate(state, 1.0, floor=10) == pytest.approx(40.0)


def test_a_refusal_closes_the_gate_and_paces_at_a_little_under_what_was_accepted() -> None:
    state = Pacing()
    starts = [admit(state, 0.0, floor=20) for _ in range(11)]  # 0, 0.05 ... 0.5
    for _ in range(2):  # two calls waiting their turn
        admit(state, 0.0, floor=20)
    refuse(state, 0.5, retry_after=1.0, started=starts[-1], floor=20)
    assert state.closed_until == pytest.approx(1.5)
    # The API took the ten starts before the refused one: ten a second.
    assert state.rate == pytest.approx(BACKOFF * 10)
    assert starts[-1] not in state.recent, "the refused start is not counted as accepted"
    assert len(state.recent) == 10, "nor the starts booked ahead, which book again"
    first = admit(state, 0.6, floor=20)
    assert first == pytest.approx(1.5), "nobody starts while the gate is closed"
    assert admit(state, 0.6, floor=20) == pytest.approx(1.5 + 1 / (BACKOFF * 10))


def test_refusals_of_calls_sent_before_the_slow_down_do_not_slow_it_down_again() -> None:
    state = Pacing()
    starts = [admit(state, 0.0, floor=20) for _ in range(14)]
    refuse(state, 0.55, retry_after=1.0, started=starts[11], floor=20)
    rate = state.rate
    refuse(state, 0.65, retry_after=1.0, started=starts[13], floor=20)
    assert state.rate == rate
    assert state.closed_until == pytest.approx(1.65), "but each retry-after is honoured"


def test_the_learned_rate_grows_slowly_and_is_forgotten_after_a_quiet_minute() -> None:
    state = Pacing(rate=10.0, rate_since=100.0)
    assert allowed_rate(state, 110.0, floor=5) == pytest.approx(10.0 * (1 + GROWTH * 10))
    assert allowed_rate(state, 100.0 + FORGET + 1, floor=5) == pytest.approx(5.0)
    assert state.rate is None, "slow start again: the next burst may meet another limit"


def test_without_evidence_of_the_limit_a_refusal_halves_the_allowed_rate() -> None:
    state = Pacing(rate=8.0, rate_since=0.0)
    refuse(state, 30.0, retry_after=2.0, started=30.0, floor=5)  # nothing sent before
    assert state.rate == pytest.approx(BACKOFF * 8.0 * (1 + GROWTH * 30) / 2)
    assert state.closed_until == pytest.approx(32.0)


def test_the_rate_never_drops_under_the_minimum() -> None:
    state = Pacing(rate=MIN_RATE, rate_since=0.0)
    refuse(state, 1.0, retry_after=1.0, started=1.0, floor=1)
    assert state.rate == MIN_RATE


def test_past_the_remembered_starts_the_rate_measured_is_the_sending_rate() -> None:
    state = Pacing(recent=[i / 1000 for i in range(128)])
    rate, exact = rate_before(state, 0.128)
    assert not exact and rate == pytest.approx(1000.0)
    assert rate_before(Pacing(recent=[0.1, 0.5, 1.2]), 1.3) == (2.0, True)
