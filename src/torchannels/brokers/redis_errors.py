"""redis-py for the Redis broker: imported on first use, and its errors as
the broker's (:class:`~torchannels.errors.BrokerUnavailable` when Redis is
out of reach, :class:`~torchannels.errors.BrokerError` when it refused)."""

from __future__ import annotations

from typing import Any

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


def broker_error(exc: BaseException, where: str) -> BrokerError:
    """The broker error for a redis-py error: unreachable, or refused."""
    r = redis_py()
    if isinstance(exc, r.exceptions.ResponseError) and not isinstance(
        exc, r.exceptions.ClusterDownError
    ):
        return BrokerError(f"Redis refused {where}: {exc}")
    return BrokerUnavailable(f"Redis is unreachable ({where}): {exc!r}")


def unreachable(exc: BaseException) -> bool:
    r = redis_py()
    return isinstance(exc, r.exceptions.RedisError | r.exceptions.RedisClusterException | OSError)
