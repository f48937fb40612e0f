"""redis-py for the Redis broker: imported on first use, and its errors as
the broker's (:class:`~torchannels.errors.BrokerUnavailable` when Redis is
out of reach, :class:`~torchannels.errors.BrokerError` when it refused)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import BrokerError, BrokerUnavailable


def redis_py() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Redis broker needs redis-py: pip install 'torchannels[redis]'"
        ) from None
    return redis


#: URL options whose values are not shown in an error.
_SECRET_OPTIONS = ("password", "username")


def check_url(url: str) -> None:
    """Raise :class:`ValueError` for a Redis URL redis-py would refuse only
    when connecting, naming the option: ``socket_timeout=abc``.

    >>> check_url("redis://127.0.0.1:6379/0?socket_timeout=2.5")
    >>> check_url("redis://127.0.0.1:6379/0?socket_timeout=abc")
    Traceback (most recent call last):
    ...
    ValueError: URL option socket_timeout=abc must be a number
    """
    r = redis_py()
    plain = url.replace("+cluster://", "://", 1)
    parsers = r.asyncio.connection.URL_QUERY_ARGUMENT_PARSERS
    for name, values in parse_qs(urlsplit(plain).query).items():
        parser = parsers.get(name)
        try:
            if parser is not None:
                parser(values[0])
        except (TypeError, ValueError):
            shown = "..." if name in _SECRET_OPTIONS else values[0]
            kind = {int: "an integer", float: "a number"}.get(parser, "a value redis-py reads")
            raise ValueError(f"URL option {name}={shown} must be {kind}") from None
    try:
        r.asyncio.connection.parse_url(plain)  # the host and port
    except ValueError as exc:
        raise ValueError(f"not a valid Redis URL: {exc}") from None


def broker_error(exc: BaseException, where: str) -> BrokerError:
    """The broker error for a redis-py error: unreachable, or refused."""
    r = redis_py()
    if isinstance(exc, r.exceptions.ResponseError) and not isinstance(
        exc, r.exceptions.ClusterDownError
    ):
        return BrokerError(f"Redis refused {where}: {exc}")
    # redis-py 8's repr() of its errors is only their kind: "network:ConnectionError".
    return BrokerUnavailable(f"Redis is unreachable ({where}): {type(exc).__name__}: {exc}")


def unreachable(exc: BaseException) -> bool:
    r = redis_py()
    return isinstance(exc, r.exceptions.RedisError | r.exceptions.RedisClusterException | OSError)
