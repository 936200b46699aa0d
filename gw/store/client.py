"""Store clients: one URL gives a single Redis, a Redis Cluster, or a Sentinel-managed master.

URL forms (`[user[:password]@]` and `?option=value` are optional everywhere):

    redis://[user:password@]host[:port][/db]            one server over TCP (port 6379)
    rediss://...                                        the same over TLS
    unix://[user:password@]/path/to/redis.sock[?db=N]   one server on a Unix socket
    redis+cluster://[user:password@]host:port[,host:port...]
    rediss+cluster://...                                Redis Cluster (over TLS)
    redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]
    rediss+sentinel://...                               Sentinel-managed master (over TLS)

Redis Cluster: the listed nodes are startup nodes; the client discovers the others (CLUSTER
SLOTS), follows MOVED/ASK redirections and re-reads the slot map after errors. Only db 0
exists in a cluster. Every session's keys share a hash tag, so each session operation runs
on one primary. Expiry notifications are per node: `ExpiryListener` subscribes on every
primary and follows topology changes.

Sentinel: the listed sentinels are asked for the current master of `service_name`; the
client reconnects to the new master after a failover. `user:password@` authenticates to the
master; the `sentinel_username` / `sentinel_password` options authenticate to the sentinels.

Options (query string), as for redis-py's `from_url`: `socket_timeout`,
`socket_connect_timeout`, `health_check_interval`, `max_connections`, `client_name`,
`ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_check_hostname`, ...
As in redis-py, URL options win over keyword arguments to `connect()`, which win over the
defaults below.

Defaults: connect timeout 2 s, command timeout 5 s, a PING before reusing a connection idle
for 15 s, and on a connection error (e.g. Redis restarted) up to 3 retries with exponential
backoff and jitter (up to 50 ms, doubling, at most 1 s between tries). Timeouts are not retried: a
command that timed out may have run, and the session scripts are not all idempotent.
Single server: a pool of at most 100 connections (`max_connections`); a command that finds
them all busy waits up to `pool_timeout` (2 s) for one, then fails. redis-py's own pool
fails it at once ("Too many connections"): a burst of set-ups after a pause of the node
failed with 503 although Redis was fine (bench/notes.md). See `WaitingConnectionPool`.
Cluster: at most 1000 connections per node (redis-py's cluster client fails a command at
once with MaxConnectionsError when a node's pool is full; its own default is 100). A topology
refresh asked for by a connection error runs on the command's next attempt
(`topology_refresh_min_interval` 0 on redis-py >= 8.2, whose default is 1 s; failed refreshes
still back off), so a whole-cluster outage is seen within the command's own retries.

Outages of a cluster reach callers as `ClusterUnavailable` (a redis ConnectionError) on every
supported redis-py version; see `StoreCluster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:  # typed as its base: the code below runs on redis-py with or without it
    _Unreachable = RedisClusterException
else:  # redis-py >= 8.2 raises it from commands and pipelines once a refresh reached no node
    _Unreachable = getattr(redis.exceptions, "RedisClusterUnreachableError", RedisClusterException)

__all__ = [
    "DEFAULTS",
    "ClusterUnavailable",
    "StoreClient",
    "StoreCluster",
    "StoreClusterPipeline",
    "channel_home",
    "connect",
    "decodes_responses",
    "default_retry",
    "is_cluster",
    "node_client",
    "primaries",
    "pubsub_client",
    "refresh_topology",
    "release_pubsub_client",
    "scan_batches",
]

StoreClient: TypeAlias = Redis | RedisCluster
"""What the store, the event bus, the expiry listener, the registry and RPC accept."""

DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 15,
    "socket_keepalive": True,
}

CLUSTER_MAX_CONNECTIONS = 1000
MAX_CONNECTIONS = 100
POOL_TIMEOUT = 2.0


class ClusterUnavailable(RedisConnectionError, _Unreachable):
    """No cluster node answers, or the slot map does not cover a key's slot. A redis
    ConnectionError (so a RedisError: the node answers 503) and a RedisClusterException
    (on redis-py >= 8.2 a RedisClusterUnreachableError); the error redis-py raised is its
    `__cause__`."""


# Errors of a cluster command, pipeline or slot lookup that mean an outage: a slot no node
# serves; (redis-py >= 8.2) a topology refresh that reached no node. Other
# RedisClusterExceptions (a cross-slot command, ...) are deterministic and stay what they are.
_OUTAGES: tuple[type[Exception], ...] = (
    (SlotNotCoveredError,)
    if _Unreachable is RedisClusterException
    else (SlotNotCoveredError, _Unreachable)
)


_PLAIN = frozenset((str, bytes, int))
_LEAN: dict[type[Any], type[Any]] = {}


def lean_connection(cls: type[Any]) -> type[Any]:
    """`cls` packing plain commands (str, bytes and int arguments: every command the store
    sends, its scripts' long ARGV lists included) with one call to hiredis.pack_command.

    redis-py's packer encodes argument by argument in Python before calling hiredis: 33 µs
    for a 37-argument EVALSHA against 8 µs; over a whole command round trip, 10-25 % of the
    client's CPU (docs/decisions.md). Anything else (floats, memoryviews, a two-word
    command name) goes through redis-py's own packer."""
    try:
        from hiredis import pack_command
    except ImportError:  # redis without the hiredis extra: nothing to gain
        return cls
    lean = _LEAN.get(cls)
    if lean is None:

        def pack_command_lean(self: Any, *args: Any) -> Any:
            head = args[0]
            if type(head) is str and " " not in head and set(map(type, args)) <= _PLAIN:
                return [pack_command(args)]
            return cls.pack_command(self, *args)

        lean = _LEAN[cls] = type(f"Lean{cls.__name__}", (cls,), {"pack_command": pack_command_lean})
    return lean


class WaitingConnectionPool(ConnectionPool):
    """redis-py's pool, except that a command finding every connection busy waits up to
    `pool_timeout` seconds (kept as `timeout`) for one to be released instead of failing
    at once. (redis-py's BlockingConnectionPool waits too, but takes a lock, a condition
    and a timeout on every command: 10-18 µs more per command, `python -m
    bench.micro_redis`; this one pays only when full.)"""

    def __init__(self, *args: Any, pool_timeout: float | str = POOL_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = lean_connection(self.connection_class)
        self.timeout = float(pool_timeout)  # a string from `?pool_timeout=` in the URL
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        deadline: float | None = None
        while True:
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                loop = asyncio.get_running_loop()
                if deadline is None:
                    deadline = loop.time() + self.timeout
                left = deadline - loop.time()
                if left > 0:
                    released: asyncio.Future[None] = loop.create_future()
                    self._waiting.append(released)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(released, left)
                    if released.done():
                        continue
                raise RedisConnectionError(
                    f"no Redis connection free within {self.timeout:g} s "
                    f"({self.max_connections} in use)"
                ) from None

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        while self._waiting:  # wake the oldest waiter still waiting
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


_REFRESH_MIN_INTERVAL = (  # redis-py >= 8.2
    "topology_refresh_min_interval" in inspect.signature(RedisCluster.__init__).parameters
)


class StoreCluster(RedisCluster):
    """RedisCluster whose outages are RedisErrors: `ClusterUnavailable` (a ConnectionError)
    when no node answers a topology refresh or a key's slot is not covered, from commands
    (scripts included), pipelines, `initialize()` and `get_node_from_key()`. Code that answers
    503 on RedisError (and the redis-py retry loops) must see those as connection errors.
    Like the single-server client, a command that timed out is not re-sent (it may have run).

    redis-py < 8.2 raised such an outage from `initialize()`, run by the command's next
    attempt, as a RedisClusterException (not a RedisError). redis-py 8.2 keeps the current slot
    map when a refresh fails (it logs "Topology refresh failed, keeping the current one"),
    ends the command or pipeline with a new RedisClusterUnreachableError (still not a
    RedisError), and runs an error-triggered refresh at most once a second
    (`topology_refresh_min_interval`): a command failing within a second of the last refresh
    ran out of retries before any refresh and raised the plain ConnectionError. Here the
    refresh runs on the next attempt (interval 0, as before 8.2; failed refreshes still back
    off) and both raise paths are translated."""

    ERRORS_ALLOW_RETRY = tuple(  # type: ignore[assignment]
        e for e in RedisCluster.ERRORS_ALLOW_RETRY if not issubclass(e, RedisTimeoutError)
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _REFRESH_MIN_INTERVAL:
            kwargs.setdefault("topology_refresh_min_interval", 0.0)
        super().__init__(*args, **kwargs)

    async def initialize(self, *args: Any, **kwargs: Any) -> StoreCluster:
        try:
            await super().initialize(*args, **kwargs)
        except ClusterUnavailable:
            raise
        except RedisClusterException as exc:  # topology could not be read
            raise ClusterUnavailable(str(exc)) from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except ClusterUnavailable:
            raise
        except _OUTAGES as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:  # refused by redis-py
            return super().pipeline(transaction, shard_hint)
        return StoreClusterPipeline(self, transaction)  # type: ignore[abstract, unused-ignore]

    def get_node_from_key(self, key: str, replica: bool = False) -> ClusterNode | None:
        try:
            return super().get_node_from_key(key, replica)
        except SlotNotCoveredError as exc:
            raise ClusterUnavailable(str(exc)) from exc


class StoreClusterPipeline(ClusterPipeline):
    """A StoreCluster's pipeline: outages are `ClusterUnavailable`, as for commands."""

    async def initialize(self) -> ClusterPipeline:
        try:
            return await super().initialize()
        except ClusterUnavailable:
            raise
        except _OUTAGES as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except ClusterUnavailable:
            raise
        except _OUTAGES as exc:
            raise ClusterUnavailable(str(exc)) from exc


_SCHEMES_SINGLE = ("redis", "rediss", "unix")
_SCHEMES_CLUSTER = ("redis+cluster", "rediss+cluster")
_SCHEMES_SENTINEL = ("redis+sentinel", "rediss+sentinel")


def default_retry() -> Retry:
    """Up to 3 retries on connection errors, after up to 50, 100, 200 ms (full jitter)."""
    return Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=1.0),
        retries=3,
        supported_errors=(RedisConnectionError,),
    )


def connect(
    url: str,
    *,
    redis_class: type[Redis] = Redis,
    cluster_class: type[RedisCluster] = StoreCluster,
    **kwargs: Any,
) -> Redis | RedisCluster:
    """A client for `url` (forms in the module docstring); no I/O until first used.

    `redis_class` is used for single servers and Sentinel masters, `cluster_class` for Redis
    Cluster (subclass StoreCluster, e.g. to count errors). `kwargs` go to the client.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in _SCHEMES_SINGLE:
        options = _with_defaults({"max_connections": MAX_CONNECTIONS, **kwargs})
        if scheme == "unix":  # TCP keepalive means nothing on a Unix socket (and is refused)
            options.pop("socket_keepalive", None)
        pool = WaitingConnectionPool.from_url(url, **options)  # the URL's options win
        return redis_class.from_pool(pool)
    if scheme in _SCHEMES_CLUSTER:
        return _cluster(url, cluster_class, kwargs)
    if scheme in _SCHEMES_SENTINEL:
        return _sentinel(url, redis_class, kwargs)
    valid = ", ".join(f"{s}://" for s in (*_SCHEMES_SINGLE, *_SCHEMES_CLUSTER, *_SCHEMES_SENTINEL))
    raise ValueError(f"store URL must start with one of {valid}: {url!r}")


def _with_defaults(kwargs: dict[str, Any], parsed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults < kwargs < URL options (`parsed`)."""
    return {**DEFAULTS, "retry": default_retry(), **kwargs, **(parsed or {})}


def _hosts(netloc: str, url: str) -> tuple[str, list[tuple[str, int]]]:
    """(userinfo, [(host, port)...]) of a comma-separated host list."""
    userinfo, _, hostlist = netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [v6]:port
            host, _, port = item[1:].partition("]:")
        else:
            host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"store URL needs host:port for every node: {item!r} in {url!r}")
        hosts.append((unquote(host), int(port)))
    if not hosts:
        raise ValueError(f"store URL names no host: {url!r}")
    return userinfo, hosts


def _options(userinfo: str, query: str, tls: bool) -> dict[str, Any]:
    """username/password and query options, parsed as redis-py's from_url does."""
    auth = f"{userinfo}@" if userinfo else ""
    scheme = "rediss" if tls else "redis"
    parsed = dict(parse_url(urlunsplit((scheme, f"{auth}localhost", "", query, ""))))
    for name in ("host", "port", "db", "connection_class"):
        parsed.pop(name, None)
    if tls:
        parsed["ssl"] = True
    return parsed


def _cluster(url: str, cls: type[RedisCluster], kwargs: dict[str, Any]) -> RedisCluster:
    parts = urlsplit(url)
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"Redis Cluster has only db 0: {url!r}")
    userinfo, hosts = _hosts(parts.netloc, url)
    options = _options(userinfo, parts.query, parts.scheme.lower().startswith("rediss"))
    if int(options.pop("db", 0) or 0) != 0:
        raise ValueError(f"Redis Cluster has only db 0: {url!r}")
    merged = _with_defaults({"max_connections": CLUSTER_MAX_CONNECTIONS, **kwargs}, options)
    return cls(startup_nodes=[ClusterNode(host, port) for host, port in hosts], **merged)


def _sentinel(url: str, redis_class: type[Redis], kwargs: dict[str, Any]) -> Redis:
    parts = urlsplit(url)
    userinfo, hosts = _hosts(parts.netloc, url)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"Sentinel URL needs /service_name[/db]: {url!r}")
    service = path[0]
    tls = parts.scheme.lower().startswith("rediss")
    options = _options(userinfo, parts.query, tls)
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"Sentinel URL db must be a number: {url!r}")
        options["db"] = int(path[1])
    sentinel_auth = {
        name[len("sentinel_") :]: options.pop(name)
        for name in ("sentinel_username", "sentinel_password")
        if name in options
    }
    merged = _with_defaults(kwargs, options)
    sentinel_kwargs: dict[str, Any] = {
        **{k: v for k, v in merged.items() if k.startswith("socket_")},
        **({"ssl": True} if tls else {}),
        **sentinel_auth,
    }
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **merged)  # type: ignore[no-untyped-call, unused-ignore]
    client: Redis = sentinel.master_for(service, redis_class=redis_class)
    return client


# -- helpers for code that runs on both kinds of client ------------------------------------


def is_cluster(client: StoreClient) -> TypeGuard[RedisCluster]:
    return isinstance(client, RedisCluster)


def decodes_responses(client: StoreClient) -> bool:
    if is_cluster(client):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return bool(kwargs.get("decode_responses"))


async def refresh_topology(cluster: RedisCluster) -> None:
    """Re-read the slot map now (new primaries, failovers, moved slots)."""
    await cluster.initialize()  # no-op once initialized
    try:
        await cluster.nodes_manager.initialize()
    except ClusterUnavailable:
        raise
    except RedisClusterException as exc:
        raise ClusterUnavailable(str(exc)) from exc


async def primaries(cluster: RedisCluster, *, refresh: bool = False) -> list[ClusterNode]:
    """The primaries that serve slots, as the client's slot map has them."""
    if refresh:
        await refresh_topology(cluster)
    else:
        await cluster.initialize()
    return list(cluster.get_primaries())


_REDIS_PARAMS = frozenset(inspect.signature(Redis.__init__).parameters) - {"self", "host", "port"}


def node_client(cluster: RedisCluster, node: ClusterNode, **overrides: Any) -> Redis:
    """A plain client to one cluster node (same credentials, TLS and timeouts), for what
    must stay on that node: pub/sub, per-node keyspace notifications, per-node CONFIG."""
    kwargs = {
        k: v for k, v in cluster.nodes_manager.connection_kwargs.items() if k in _REDIS_PARAMS
    }
    connection_class = cluster.nodes_manager.connection_kwargs.get("connection_class", object)
    if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
        kwargs["ssl"] = True
    kwargs["retry"] = default_retry()
    kwargs.update(overrides)
    return Redis(host=node.host, port=int(node.port), **kwargs)


async def pubsub_client(client: StoreClient, channel: str) -> Redis:
    """The client to SUBSCRIBE to `channel` with. A plain Redis: itself. A cluster: a new
    plain client to the primary that owns the channel's slot, which is where RedisCluster
    sends PUBLISH for that channel, so PUBLISH's receiver count includes this subscriber.
    (A cluster delivers a PUBLISH to subscribers on every node, but counts only the
    receiving node's.) Give it back with `release_pubsub_client`."""
    if not isinstance(client, RedisCluster):
        return client
    await client.initialize()
    node = client.get_node_from_key(channel)
    if node is None:  # pragma: no cover - get_node_from_key raises instead
        node = random.choice(client.get_primaries())
    return node_client(client, node)


def channel_home(client: StoreClient, channel: str) -> str | None:
    """Name (host:port) of the node PUBLISH to `channel` goes to; None for a plain Redis."""
    if not is_cluster(client):
        return None
    node = client.get_node_from_key(channel)
    return None if node is None else str(node.name)


async def release_pubsub_client(client: StoreClient, sub: Redis) -> None:
    if sub is not client:
        await sub.aclose()


async def scan_batches(client: StoreClient, match: str, count: int) -> AsyncIterator[list[bytes]]:
    """Key names matching `match`, one batch per SCAN reply; on a cluster, every primary is
    scanned in turn. SCAN may return a key twice: callers drop repeats."""
    if isinstance(client, RedisCluster):
        for node in await primaries(client):
            cursor = 0
            while True:
                reply = await client.scan(cursor, match=match, count=count, target_nodes=node)
                cursors, names = cast(tuple[dict[str, int], list[bytes]], reply)
                cursor = int(next(iter(cursors.values()), 0))
                if names:
                    yield names
                if cursor == 0:
                    break
        return
    cursor = 0
    while True:
        cursor, batch = await client.scan(cursor, match=match, count=count)
        if batch:
            yield cast(list[bytes], batch)
        if cursor == 0:
            return
