"""The admin login's per-address limit (torchannels.server.login_limit) on
a clock the test moves: backoff, reset on success, IPv6 /64s, bounded table."""

from __future__ import annotations

from torchannels.server.login_limit import LoginLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_after_the_free_tries_up_to_the_cap() -> None:
    clock = Clock()
    limit = LoginLimit(free=3, base=1.0, cap=10.0, clock=clock)
    waits = [limit.failed("192.0.2.1") for _ in range(9)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 10, 10]
    assert limit.wait("192.0.2.1") == 10
    clock.now += 4
    assert limit.wait("192.0.2.1") == 6
    clock.now += 6
    assert limit.wait("192.0.2.1") == 0
    # Its count stands until it is forgotten: the next failure waits again.
    assert limit.failed("192.0.2.1") == 10


def test_success_forgets_and_other_addresses_are_apart() -> None:
    limit = LoginLimit(free=1, clock=Clock())
    assert [limit.failed("192.0.2.1") for _ in range(3)] == [0, 1, 2]
    assert limit.wait("192.0.2.2") == 0
    limit.succeeded("192.0.2.1")
    assert limit.wait("192.0.2.1") == 0 and limit.failed("192.0.2.1") == 0


def test_an_ipv6_client_counts_by_its_64() -> None:
    limit = LoginLimit(free=1, clock=Clock())
    limit.failed("2001:db8:1:2::1")
    assert limit.failed("2001:db8:1:2:ffff::9") == 1  # the same /64
    assert limit.failed("2001:db8:1:3::1") == 0  # another one


def test_the_table_is_bounded_and_idle_addresses_are_forgotten() -> None:
    clock = Clock()
    limit = LoginLimit(free=1, forget=60.0, max_addresses=100, clock=clock)
    for n in range(1000):
        limit.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limit) == 100
    assert limit.wait("10.0.3.231") == 0 and limit.failed("10.0.3.231") == 1  # the newest stays
    assert limit.failed("10.0.0.0") == 0  # the oldest went first
    clock.now += 61
    assert limit.wait("192.0.2.1") == 0 and len(limit) == 0
    limit.failed("192.0.2.1")
    clock.now += 61
    assert limit.failed("192.0.2.1") == 0  # forgotten though no sweep ran
