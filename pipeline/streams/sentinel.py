"""Redis through Sentinel: a client that follows the current primary of a service.

redis-py's `Sentinel(...).master_for(service)` asks the sentinels for the primary on
every new connection, so after a promotion the next retry (pipeline/retry.py, through
broker.with_retry) reaches the new primary. A changed primary is logged, counted
(`linewatch_redis_failovers_total`) and noted in Redis (keys.BROKER_FAILOVER) for
`linewatch status`. Passwords stay in SecretStr until handed to redis-py.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from linewatch.pipeline import keys, metrics
from linewatch.pipeline.errors import ServiceUnavailable

if TYPE_CHECKING:
    from linewatch.pipeline.config import RedisSettings

log = logging.getLogger(__name__)
Address = tuple[str, int]


class FailoverNotingPool(SentinelConnectionPool):
    """A primary's pool that notices when the sentinels name another primary. Its
    connections ask the pool's proxy for the address, so the proxy's lookup is wrapped."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        proxy, lookup = self.proxy, self.proxy.get_master_address
        password = kwargs.get("password")

        def noting_lookup() -> Address:
            before = proxy.master_address
            address = lookup()
            if before is not None and tuple(address) != tuple(before):
                note_failover(tuple(before), tuple(address), password)
            return address

        proxy.get_master_address = noting_lookup  # type: ignore[method-assign]


def note_failover(before: Address, after: Address, password: str | None) -> None:
    """Log and count a promotion seen by this process; record it for `linewatch status`."""
    metrics.REDIS_FAILOVERS.inc()
    log.warning(
        "Redis primary changed from %s:%s to %s:%s (Sentinel failover); carrying on",
        *before,
        *after,
    )
    try:
        client = redis.Redis(host=after[0], port=after[1], password=password, socket_timeout=2)
        fields = {"at": f"{time.time():.3f}", "from": _text(before), "to": _text(after)}
        client.hset(keys.BROKER_FAILOVER, mapping=fields)
        client.close()
    except redis.RedisError as exc:
        log.info("could not record the failover in Redis (%s)", exc.__class__.__name__)


def _text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def sentinel_manager(config: RedisSettings) -> Sentinel:
    """The sentinels of `config`, with both passwords (never logged)."""
    timeout = config.socket_timeout_s
    return Sentinel(
        config.addresses(),
        sentinel_kwargs={
            "password": _secret(config.sentinel_password),
            "socket_timeout": min(timeout, 2.0),
            "socket_connect_timeout": min(timeout, 2.0),
        },
        password=_secret(config.password),
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 5.0),
        health_check_interval=30,
    )


def connect(config: RedisSettings, attempts: int = 1, delay_s: float = 0.5) -> redis.Redis:
    """A client of the service's current primary, checked with PING; ServiceUnavailable
    says on one line what is wrong (sentinels down, unknown service, a password)."""
    manager = sentinel_manager(config)
    for attempt in range(attempts):
        try:
            return _checked(manager, config)
        except ServiceUnavailable:
            if attempt + 1 == attempts:
                raise
            time.sleep(delay_s)
    raise AssertionError("unreachable")


def _checked(manager: Sentinel, config: RedisSettings) -> redis.Redis:
    _check_sentinels(manager, config)
    client = manager.master_for(config.service, connection_pool_class=FailoverNotingPool)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise ServiceUnavailable(
            f"the primary of Redis service '{config.service}' refused the password "
            f"({exc}); fix redis.password"
        ) from None
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"cannot reach the primary of Redis service '{config.service}' "
            f"({exc.__class__.__name__}); the sentinels may be failing over"
        ) from None
    return client


def _check_sentinels(manager: Sentinel, config: RedisSettings) -> None:
    """Ask each sentinel for its services: a named error for down, refused or unknown."""
    down, known = [], set()
    for sentinel in manager.sentinels:
        address = _address_of(sentinel)
        try:
            known |= set(sentinel.sentinel_masters())
        except redis.AuthenticationError as exc:
            raise ServiceUnavailable(
                f"Redis Sentinel at {address} refused the password ({exc}); "
                "fix redis.sentinel_password"
            ) from None
        except redis.ResponseError as exc:
            problem = "refused the password" if "AUTH" in str(exc) else "answered an error"
            raise ServiceUnavailable(
                f"Redis Sentinel at {address} {problem} ({exc}); check redis.sentinels and "
                "redis.sentinel_password"
            ) from None
        except redis.RedisError:
            down.append(address)
    if len(down) == len(config.sentinels):
        raise ServiceUnavailable(
            f"no Redis Sentinel answers ({', '.join(down)}); start them or fix redis.sentinels"
        )
    if config.service not in known:
        raise ServiceUnavailable(
            f"the Redis sentinels know no service '{config.service}' "
            f"(they know: {', '.join(sorted(known)) or 'none'}); fix redis.service"
        )


def _address_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def primary(config: RedisSettings) -> Address | None:
    """The current primary as the sentinels see it (None when none is known)."""
    try:
        address = sentinel_manager(config).discover_master(config.service)
    except (MasterNotFoundError, redis.RedisError):
        return None
    return (str(address[0]), int(address[1]))


def last_failover(client: redis.Redis) -> dict[str, str]:
    """The last failover a linewatch process noticed: at (epoch s), from, to; {} if none."""
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.BROKER_FAILOVER).items()}


def aio_client(config: RedisSettings) -> Any:
    """An asyncio client of the service's primary (the API's event streams)."""
    from redis.asyncio.sentinel import Sentinel as AioSentinel

    manager = AioSentinel(
        config.addresses(),
        sentinel_kwargs={"password": _secret(config.sentinel_password)},
        password=_secret(config.password),
        socket_connect_timeout=5,
    )
    return manager.master_for(config.service)
