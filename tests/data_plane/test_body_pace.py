"""Request-body pacing with the default settings, on a simulated clock (the real-socket test shrinks the window)."""

from __future__ import annotations

import base64

import pytest

from data_plane.body import BodyPace
from data_plane.errors import GatewayError
from data_plane.settings import Settings, Timeouts

ENV = {"ODOCK_NODE_TOKEN": "node-" + "t" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode()}


def defaults() -> Timeouts:
    return Settings.from_env(ENV).timeouts


def cut_at(timeouts: Timeouts, chunks: list[tuple[float, int]], *, first: int = 0) -> float | None:
    """When a body arriving as ``chunks`` ((time, bytes), in order) is cut, as read_body's loop decides; None: never."""
    now, received = 0.0, first
    pace = BodyPace.start(timeouts, now, received)
    pending = iter(chunks)
    arrival = next(pending, None)
    while arrival is not None:
        try:
            wake = now + pace.wait(now, received)
        except GatewayError as err:
            assert (err.status, err.code, err.close) == (408, "request_timeout", True)
            return now
        if arrival[0] <= wake:
            now, received = arrival[0], received + arrival[1]
            arrival = next(pending, None)
        else:
            now = wake
    return None


def test_default_settings() -> None:
    t = defaults()
    assert (t.client_body_window, t.client_body_min_rate) == (15, 1024)
    assert (t.client_body_idle, t.client_body) == (30, 900)


def test_a_one_byte_per_second_trickle_is_cut_within_30_s_by_default() -> None:
    trickle = [(float(s), 1) for s in range(1, 3600)]
    assert cut_at(defaults(), trickle) == pytest.approx(15)
    # A burst first buys nothing beyond the window it arrived in.
    assert cut_at(defaults(), trickle, first=10 * 1024 * 1024) == pytest.approx(30)
    burst_then_trickle = [(1.0, 5 * 1024 * 1024)] + trickle[1:]
    cut = cut_at(defaults(), burst_then_trickle)
    assert cut is not None and cut <= 30


def test_honest_uploads_are_not_cut_by_default() -> None:
    # 32 MiB at 64 KiB/s (about 8.5 minutes), one chunk every 100 ms.
    slow_link = [(0.1 * i, 6554) for i in range(1, 5121)]
    assert cut_at(defaults(), slow_link) is None
    # Exactly the minimum rate, and a 14 s pause inside a window a fast client filled.
    assert cut_at(defaults(), [(float(s), 1024) for s in range(1, 600)]) is None
    paused = [(1.0, 1 << 20), (15.0, 1 << 20), (29.5, 1 << 20), (30.0, 1)]
    assert cut_at(defaults(), paused) is None


def test_pauses_and_the_absolute_cap() -> None:
    # A pause longer than the idle timeout, pacing off.
    no_pacing = Timeouts(client_body_min_rate=0)
    assert cut_at(no_pacing, [(1.0, 100), (40.0, 100)]) == pytest.approx(31)
    # A fast client still sending after the cap.
    assert cut_at(defaults(), [(float(s), 1 << 20) for s in range(1, 1000)]) == pytest.approx(900)


def test_the_message_names_the_rate() -> None:
    pace = BodyPace.start(defaults(), 0.0, 0)
    with pytest.raises(GatewayError) as info:
        pace.wait(15.0, 10)
    assert "slower than 1024 bytes per second (over 15 s)" in info.value.message
