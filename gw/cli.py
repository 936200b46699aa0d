"""msrp-gw: a gateway between page-mode (SIP MESSAGE) and session-mode (MSRP) instant
messaging. One command runs a node, checks a config, and drives running nodes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gw import __version__
from gw.config import Config, ConfigError, load_config
from gw.logs import setup_logging
from gw.store.client import connect

# Exit codes: 0 ok, 1 the node or the store said no (MI error, store error), 2 usage or
# config error, 3 the management API cannot be reached, 130 interrupted.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msrp-gw",
        description=__doc__,
        epilog="Every command takes --config FILE, before or after its name; settings can also "
        "come from MSRPGW_<SECTION>__<KEY> environment variables (docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"msrp-gw {__version__}")
    parser.add_argument("--config", "-c", default=None, help="TOML config file")
    config = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command it wins, absent it leaves the one given before
    config.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")
    mi = argparse.ArgumentParser(add_help=False)
    mi.add_argument(
        "--url",
        help="the node's MI endpoint, e.g. http://127.0.0.1:8080/mi "
        "(default: from mgmt.listen, or the running node's ready.json when its port is 0)",
    )
    mi.add_argument("--token", help="bearer token for the management API (default: mgmt.token)")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store-url",
        help="Redis URL (default: store.url, or the running node's embedded store)",
    )

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "run",
        parents=[config],
        help="start a gateway node (SIP, MSRP and management listeners; SIGTERM drains it)",
    )
    sub.add_parser(
        "check-config",
        parents=[config],
        help="validate the configuration as `run` would, print 'config ok' or one line saying "
        "what is wrong (exit 2)",
    )

    sessions = sub.add_parser(
        "sessions", help="list or end sessions, through a node's management API (MI)"
    )
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[config, mi], help="list the sessions")
    listing.add_argument("--json", action="store_true", help="print the MI reply as JSON")
    end = actions.add_parser("end", parents=[config, mi], help="end a session (BYE, record gone)")
    end.add_argument("key", help="the session key, as `sessions list` shows it")

    call = sub.add_parser(
        "mi",
        parents=[config, mi],
        help="call any MI command and print its JSON reply (as `opensips-cli -x mi` does)",
    )
    call.add_argument("mi_command", metavar="command", help="e.g. msrp_gw_list_sessions, which")
    call.add_argument(
        "params",
        nargs="*",
        help="positional parameters, or name=value pairs for named ones",
    )

    trying = sub.add_parser(
        "try",
        parents=[config],
        help="send one message through a running node, both ways, with two users played here "
        "(docs/tutorial.md)",
    )
    trying.add_argument(
        "--gateway",
        help="the node's SIP UDP address host:port (default: the first udp: of sip.listen, or "
        "the running node's ready.json when its port is 0)",
    )
    trying.add_argument("--timeout", type=float, default=10.0, help="seconds per direction")
    trying.add_argument(
        "--host",
        default="127.0.0.1",
        help="where both users listen, and the host in their URIs: an address or name the "
        "node reaches (e.g. the service name in docker compose); default 127.0.0.1",
    )
    trying.add_argument(
        "--every",
        type=float,
        default=0.0,
        help="run again every this many seconds, for good (a message flow to watch); default: once",
    )
    trying.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep both users up afterwards: the session stays (the node ends it "
        "when the MSRP user's connection closes)",
    )

    sub.add_parser(
        "nodes",
        parents=[config, store],
        help="list the live nodes of the cluster (their heartbeats in the store)",
    )

    events = sub.add_parser(
        "events",
        parents=[config, store],
        help="print the event stream (E_MSRP_GW_*), one JSON envelope a line",
    )
    events.add_argument(
        "--count", type=int, default=0, help="exit after this many events (default: never)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"msrp-gw: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        if not cfg.store.url:  # `run` would start the embedded store: is there a server?
            from gw.store.embedded import ServerBinaryNotFound, server_binary

            try:
                server_binary()
            except ServerBinaryNotFound as exc:
                print(f"msrp-gw: config error: store.url is empty and {exc}", file=sys.stderr)
                return EXIT_USAGE
        print("config ok")
        return 0
    if args.command == "sessions":
        return _sessions(args, cfg)
    if args.command == "events":
        return _events(args, cfg)
    if args.command == "mi":
        return _mi(args, cfg)
    if args.command == "nodes":
        return _nodes(args, cfg)
    if args.command == "try":
        return _try(args, cfg)
    setup_logging(cfg.log.level, cfg.log.format, cfg.node.id)
    from redis.exceptions import RedisError

    from gw.node import run_loop, run_node

    try:
        return run_loop(run_node(cfg), cfg.node.loop)
    except RedisError as exc:  # before the node serves anything: no traceback, one line
        where = _redacted(cfg.store.url) if cfg.store.url else "the embedded store"
        return _fail(f"cannot start: {where} is unreachable: {_reason(exc)}", EXIT_UNREACHABLE)
    except OSError as exc:  # a port taken, a file missing: the reason names it
        return _fail(f"cannot start: {_reason(exc)}", EXIT_FAILED)


def _reason(exc: BaseException) -> str:
    """An exception's text, never empty (a bare TimeoutError has none)."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__


def _redacted(url: str) -> str:
    """`url` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hosts}"


def _fail(message: str, code: int) -> int:
    print(f"msrp-gw: {message}", file=sys.stderr)
    return code


def _ready_info(cfg: Config) -> dict[str, Any] | None:
    """The running node's `<state_dir>/ready.json` (its bound addresses), if there is one."""
    try:
        info = json.loads((Path(cfg.node.state_dir) / "ready.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


# -- sessions -------------------------------------------------------------------------------


class _Usage(Exception):
    pass


def _mi_endpoint(args: argparse.Namespace, cfg: Config) -> str:
    from gw.mgmt.client import mi_url

    if args.url:
        return str(args.url)
    listen = cfg.mgmt.listen
    if listen.rpartition(":")[2] == "0":  # OS-picked port: only the node knows it
        ready = _ready_info(cfg)
        mgmt = ready.get("mgmt") if ready else None
        if not isinstance(mgmt, str) or not mgmt:
            raise _Usage(
                f"mgmt.listen has port 0 and there is no running node in {cfg.node.state_dir} "
                "(no ready.json): pass --url"
            )
        listen = mgmt
    try:
        return mi_url(listen)
    except ValueError as exc:
        raise _Usage(f"mgmt.listen: {exc}") from None


def _sessions(args: argparse.Namespace, cfg: Config) -> int:
    from gw.mgmt.client import MiCallError, MiClient, MiTransportError

    try:
        url = _mi_endpoint(args, cfg)
    except _Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    client = MiClient(url, args.token if args.token is not None else cfg.mgmt.token)
    try:
        if args.action == "list":
            result = client.call("msrp_gw_list_sessions")
        else:
            result = client.call("msrp_gw_end_session", {"key": args.key})
    except MiCallError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except MiTransportError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    if args.action == "end":
        print(f"session {args.key} ended" if result == "OK" else json.dumps(result))
        return 0
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(format_sessions(_session_list(result), time.time()))
    return 0


def _session_list(result: Any) -> list[dict[str, Any]]:
    """`{"Sessions": [...]}` (ours) or a bare array (OpenSIPS's own msrp_gateway)."""
    items = result.get("Sessions") if isinstance(result, dict) else result
    if not isinstance(items, list):
        return []
    return [s for s in items if isinstance(s, dict)]


_COLUMNS = ("KEY", "STATE", "ORIGIN", "OWNER", "FROM", "TO", "QUEUED", "AGE", "IDLE")
CELL_WIDTH = 60  # longer cells are cut (`sessions list --json` has them whole)


def _cell(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def format_sessions(sessions: list[dict[str, Any]], now: float) -> str:
    """A plain-text table, one session a row; AGE since creation, IDLE since the last message
    from either side. One very long key or URI does not widen every row: cells are cut at
    CELL_WIDTH characters."""
    if not sessions:
        return "no sessions"
    rows = [_COLUMNS]
    for s in sessions:
        created = _number(s.get("created"))
        last = max(created, _number(s.get("last_message")), _number(s.get("last_send")))
        rows.append(
            (
                _cell(str(s.get("key", ""))),
                str(s.get("state", "")),
                str(s.get("origin", "")),
                str(s.get("owner", "")),
                _cell(str(s.get("from", s.get("msg_side_from", "")))),
                _cell(str(s.get("to", s.get("msg_side_to", "")))),
                str(s.get("queued", "")),
                _duration(now - created) if created else "",
                _duration(now - last) if last else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# -- events ---------------------------------------------------------------------------------


def _store_url(args: argparse.Namespace, cfg: Config) -> str:
    if args.store_url:
        return str(args.store_url)
    if cfg.store.url:
        return cfg.store.url
    ready = _ready_info(cfg)  # the embedded store lives as long as its node
    url = ready.get("store") if ready else None
    if isinstance(url, str) and url:
        return url
    raise _Usage(
        f"store.url is empty and there is no running node in {cfg.node.state_dir} "
        "(no ready.json with its embedded store): pass --store-url"
    )


def _mi(args: argparse.Namespace, cfg: Config) -> int:
    """Any MI command: positional parameters, or all name=value (named)."""
    from gw.mgmt.client import MiCallError, MiClient, MiTransportError

    try:
        url = _mi_endpoint(args, cfg)
    except _Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    named = [p.partition("=") for p in args.params]
    params: list[str] | dict[str, str] | None
    if args.params and all(sep for _, sep, _ in named):
        params = {name: value for name, _, value in named}
    else:
        params = list(args.params) or None
    client = MiClient(url, args.token if args.token is not None else cfg.mgmt.token)
    try:
        result = client.call(args.mi_command, params)
    except MiCallError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except MiTransportError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _try(args: argparse.Namespace, cfg: Config) -> int:
    from gw.sip.transport import parse_listen
    from gw.tools.try_it import run_rounds

    target = args.gateway
    if not target:
        udp = [parse_listen(i) for i in cfg.sip.listen if i.lower().startswith("udp:")]
        if not udp:
            return _fail("sip.listen has no udp: listener: pass --gateway host:port", EXIT_USAGE)
        host, port = udp[0].host, udp[0].port
        if port == 0:
            ready = _ready_info(cfg) or {}
            found = [s for s in ready.get("sip", []) if isinstance(s, str) and s.startswith("udp:")]
            if not found:
                return _fail(
                    "sip.listen has port 0 and no node runs here: pass --gateway", EXIT_USAGE
                )
            _, host, text = found[0].rsplit(":", 2)
            port = int(text)
        target = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        return _fail(f"--gateway must be host:port, got {target!r}", EXIT_USAGE)
    try:  # names resolved once (the compose stack passes service names), not per datagram
        gateway = (_address(host.strip("[]")), int(port_text))
        users = _address(args.host)
    except OSError as exc:
        return _fail(
            f"cannot resolve --gateway {target!r} or --host {args.host!r}: {exc}", EXIT_USAGE
        )
    return asyncio.run(run_rounds(gateway, args.timeout, args.hold, users, args.every))


def _address(host: str) -> str:
    """An IP address for `host` (itself when it is one), IPv4 first (`localhost`)."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(found[0][4][0])


def _nodes(args: argparse.Namespace, cfg: Config) -> int:
    try:
        url = _store_url(args, cfg)
    except _Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        nodes = asyncio.run(_list_nodes(url))
    except ValueError as exc:
        return _fail(f"bad store URL: {exc}", EXIT_USAGE)
    except OSError as exc:
        return _fail(f"store error: {_reason(exc)}", EXIT_UNREACHABLE)
    if not nodes:
        print("no live nodes")
        return 0
    now = time.time()
    rows = [("NODE", "MSRP", "HEARTBEAT")]
    for info in sorted(nodes, key=lambda n: str(n.get("node", ""))):
        age = now - _number(info.get("ts"))
        rows.append((str(info.get("node", "")), str(info.get("msrp", "")), f"{age:.1f}s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _list_nodes(url: str) -> list[dict[str, Any]]:
    from redis.exceptions import RedisError

    from gw.cluster.registry import NodeRegistry

    redis = connect(url)
    try:
        return await NodeRegistry(redis, "cli").nodes()
    except RedisError as exc:
        raise OSError(_reason(exc)) from exc
    finally:
        await redis.aclose()


def _events(args: argparse.Namespace, cfg: Config) -> int:
    if args.count < 0:
        return _fail("--count must be >= 0", EXIT_USAGE)
    try:
        url = _store_url(args, cfg)
    except _Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        return asyncio.run(_print_events(url, args.count))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `msrp-gw events | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0


async def _print_events(url: str, count: int) -> int:
    from redis.exceptions import RedisError

    from gw.store.events import EventBus

    try:
        redis = connect(url)
    except ValueError as exc:
        return _fail(f"bad store URL: {exc}", EXIT_USAGE)
    bus = EventBus(redis, node="cli")
    seen = 0
    try:
        async with bus.subscribe() as events:
            if sys.stderr.isatty():
                print(f"listening on {bus.channel} (Ctrl-C to stop)", file=sys.stderr)
            async for event in events:
                sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    break
    except (RedisError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return _fail(f"store error: {exc}", EXIT_FAILED)
    finally:
        await redis.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
