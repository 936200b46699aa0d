"""Settings: one TOML file plus `MSRPGW_<SECTION>__<KEY>` environment overrides.

Gateway keys keep the OpenSIPS `msrp_gateway` names and defaults. A bad value is
refused at start with one line naming the key (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "load_config"]


_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ConfigError(ValueError):
    """One clear line naming the offending key."""


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class NodeSection:
    id: str = field(default_factory=_default_node_id)
    # The deployment this node belongs to, for loop detection (X-Msrp-Gw). Empty: the one
    # kept in the session store, created by the first node that starts on it.
    deployment: str = ""
    state_dir: str = ".msrp-gw"
    loop: str = "auto"  # auto (uvloop when installed), uvloop, asyncio


@dataclass
class SipSection:
    listen: list[str] = field(default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"])
    advertised_host: str = ""
    outbound_proxy: str = ""
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65536
    max_headers: int = 128
    max_header_length: int = 8192
    user_agent: str = "msrp-gw"
    udp_buffer: int = 4194304
    # TCP/TLS connections (Kamailio's names and defaults where it has them)
    tcp_max_connections: int = 2048
    tcp_max_connections_per_ip: int = 256
    tcp_connection_lifetime: float = 120.0
    tcp_msg_read_timeout: float = 20.0


@dataclass
class MsrpSection:
    listen: str = "msrp://127.0.0.1:2855;tcp"
    chunk_size: int = 2048
    max_chunk_size: int = 1048576
    max_reassembly_bytes: int = 67108864  # incomplete incoming messages, all sessions
    transaction_timeout: float = 30.0
    relay: str = ""  # RFC 4976 relay, msrp[s]://host[:port];tcp; empty: none
    relay_user: str = ""
    relay_password: str = ""
    relay_expires: int = 0  # seconds asked for in AUTH; 0: send no Expires, the relay picks


@dataclass
class GatewaySection:
    hash_size: int = 10
    cleanup_interval: int = 60
    session_timeout: int = 43200
    message_timeout: int = 7200
    content_types: str = "text/plain"
    reply_mode: str = "confirm"
    accept_wrapped_types: str = ""
    delivery_timeout: float = 10.0
    setup_timeout: float = 8.0
    require_success_report: bool = False
    max_queued_messages: int = 64
    max_pending_setups: int = 64
    max_unbound_per_source: int = 64  # answered sessions not connected yet, per source
    bind_timeout: float = 32.0  # an answered session's MSRP leg must be bound by then
    max_pending_messages: int = 1000
    max_queued_bytes: int = 1048576
    max_page_message_size: int = 65536
    retry_after: int = 5
    key_template: str = "{page_aor}-{msrp_aor}"
    ruri_rewrite: str = ""
    allowed_destinations: str = ""  # domains, *.domains, networks, or "*"
    routing_hook: str = ""
    failure_notice: str = ""
    msrp_setup: str = "actpass"
    trace_keys: list[str] = field(default_factory=list)


@dataclass
class ClusterSection:
    heartbeat_ttl: float = 3.0
    forward_timeout: float = 10.0


@dataclass
class StoreSection:
    url: str = ""


@dataclass
class MgmtSection:
    listen: str = "127.0.0.1:8080"
    token: str = ""


@dataclass
class TlsSection:
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    verify_peer: bool = True


@dataclass
class LogSection:
    level: str = "info"
    format: str = "auto"  # auto, json, text


@dataclass
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    sip: SipSection = field(default_factory=SipSection)
    msrp: MsrpSection = field(default_factory=MsrpSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    store: StoreSection = field(default_factory=StoreSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    mgmt: MgmtSection = field(default_factory=MgmtSection)
    tls: TlsSection = field(default_factory=TlsSection)
    log: LogSection = field(default_factory=LogSection)

    def _check_destinations(self) -> None:
        """gateway.allowed_destinations parses; a node reachable from outside sends its
        requests through an outbound proxy or to listed destinations only (safe default)."""
        from gw.gateway.destinations import Destinations, DestinationsError
        from gw.sip.transport import parse_listen

        entries = self.gateway.allowed_destinations.replace(",", " ").split()
        try:
            Destinations(entries)
        except DestinationsError as exc:
            raise ConfigError(f"gateway.allowed_destinations: {exc}") from None
        if entries or self.sip.outbound_proxy:
            return
        exposed = [i for i in self.sip.listen if not _is_loopback(parse_listen(i).host)]
        if exposed:
            raise ConfigError(
                f"sip.listen {exposed[0]} is not a loopback address and sip.outbound_proxy is "
                'empty: set gateway.allowed_destinations (domains, networks, or "*" for any '
                "host) or sip.outbound_proxy, else anyone can make the gateway send requests "
                "to any host:port"
            )

    def validate(self) -> None:
        if self.node.deployment and not _TOKEN.fullmatch(self.node.deployment):
            raise ConfigError(
                "node.deployment must be 1-64 letters, digits or .-_ (it travels in X-Msrp-Gw)"
            )
        g = self.gateway
        for name in ("hash_size", "cleanup_interval", "session_timeout", "message_timeout"):
            if getattr(g, name) <= 0:
                raise ConfigError(f"gateway.{name} must be > 0")
        if g.hash_size > 30:
            raise ConfigError("gateway.hash_size must be <= 30 (it is log2 of the table size)")
        if g.session_timeout < g.message_timeout:
            raise ConfigError(
                "gateway.session_timeout must be >= gateway.message_timeout "
                f"({g.session_timeout} < {g.message_timeout})"
            )
        if g.reply_mode not in ("confirm", "accept"):
            raise ConfigError("gateway.reply_mode must be 'confirm' or 'accept'")
        if g.msrp_setup not in ("actpass", "active", "passive", "none"):
            raise ConfigError("gateway.msrp_setup must be actpass, active, passive or none")
        for name in (
            "delivery_timeout",
            "setup_timeout",
            "max_queued_messages",
            "max_queued_bytes",
            "max_pending_setups",
            "max_pending_messages",
            "max_unbound_per_source",
            "bind_timeout",
        ):
            if getattr(g, name) <= 0:
                raise ConfigError(f"gateway.{name} must be > 0")
        if not [t for t in g.content_types.replace(",", " ").split() if t]:
            raise ConfigError("gateway.content_types must name at least one MIME type")
        if g.routing_hook and not re.fullmatch(r"[\w.]+:\w+", g.routing_hook):
            raise ConfigError("gateway.routing_hook must be 'package.module:function'")
        try:
            g.key_template.format(
                page_aor="a", msrp_aor="b", page_user="", page_host="", msrp_user="", msrp_host=""
            )
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(f"gateway.key_template: unknown field {exc}") from None
        if not self.sip.listen:
            raise ConfigError("sip.listen must name at least one transport:host:port")
        from gw.sip.transport import parse_listen

        for item in self.sip.listen:
            try:
                spec = parse_listen(item)
            except ValueError as exc:
                raise ConfigError(f"sip.listen: {exc}") from None
            if spec.port > 65535:
                raise ConfigError(f"sip.listen port out of range: {item!r}")
            if spec.transport == "TLS" and not (self.tls.cert_file and self.tls.key_file):
                raise ConfigError("sip.listen has tls: but tls.cert_file/tls.key_file are empty")
        if self.cluster.heartbeat_ttl <= 0 or self.cluster.forward_timeout <= 0:
            raise ConfigError("cluster.heartbeat_ttl and cluster.forward_timeout must be > 0")
        if not 0 < self.sip.t1 <= self.sip.t2:
            raise ConfigError("sip.t1 must be > 0 and <= sip.t2")
        if self.sip.udp_buffer < 0:
            raise ConfigError("sip.udp_buffer must be >= 0 (0: the kernel's default)")
        if not 0 < self.sip.tcp_max_connections_per_ip <= self.sip.tcp_max_connections:
            raise ConfigError(
                "sip.tcp_max_connections_per_ip must be > 0 and <= sip.tcp_max_connections"
            )
        if self.sip.tcp_connection_lifetime <= 0 or self.sip.tcp_msg_read_timeout <= 0:
            raise ConfigError(
                "sip.tcp_connection_lifetime and sip.tcp_msg_read_timeout must be > 0"
            )
        scheme, _, _ = parse_msrp_listen(self.msrp.listen)
        if scheme == "msrps" and not (self.tls.cert_file and self.tls.key_file):
            raise ConfigError("msrp.listen is msrps: but tls.cert_file/tls.key_file are empty")
        if self.msrp.chunk_size <= 0 or self.msrp.chunk_size > self.msrp.max_chunk_size:
            raise ConfigError("msrp.chunk_size must be > 0 and <= msrp.max_chunk_size")
        if self.msrp.max_reassembly_bytes < self.msrp.max_chunk_size:
            raise ConfigError("msrp.max_reassembly_bytes must be >= msrp.max_chunk_size")
        _check_relay(self.msrp)
        host, _, port = self.mgmt.listen.rpartition(":")
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"mgmt.listen must be host:port, got {self.mgmt.listen!r}")
        token = self.mgmt.token
        if token and not all("!" <= ch <= "~" for ch in token):
            # A blank or spaced token passes a truthiness check but no Authorization header
            # can carry it (the server strips the credentials): every call would get 401.
            raise ConfigError("mgmt.token must be visible ASCII characters, with no spaces")
        if host.strip("[]") not in ("127.0.0.1", "::1", "localhost") and not token:
            raise ConfigError("mgmt.token is required when mgmt.listen is not a loopback address")
        if self.node.loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError("node.loop must be auto, uvloop or asyncio")
        if self.log.level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log.level must be debug, info, warning or error")
        if self.log.format not in ("auto", "json", "text"):
            raise ConfigError(f"log.format must be auto, json or text, got {self.log.format!r}")
        if g.retry_after < 0:
            raise ConfigError(f"gateway.retry_after must be >= 0 seconds, got {g.retry_after}")
        if g.max_page_message_size <= 0:
            raise ConfigError(
                f"gateway.max_page_message_size must be > 0, got {g.max_page_message_size}"
            )
        self._check_types()
        self._check_advertised()
        self._check_files()
        self._check_store_url()
        self._check_hook()
        self._check_destinations()

    def _check_types(self) -> None:
        from gw.mime import parse_mime

        for name in ("content_types", "accept_wrapped_types"):
            for item in getattr(self.gateway, name).replace(",", " ").split():
                if parse_mime(item) is None:
                    raise ConfigError(
                        f"gateway.{name}: {item!r} is not a MIME type (type/subtype, or *)"
                    )

    def _check_advertised(self) -> None:
        """A wildcard listener has no address peers can reach: SDP would say 0.0.0.0."""
        from gw.sip.transport import parse_listen

        if self.sip.advertised_host:
            return
        hosts = [parse_listen(i).host for i in self.sip.listen]
        hosts.append(parse_msrp_listen(self.msrp.listen)[1])
        wild = [h for h in hosts if h in ("0.0.0.0", "::")]
        if wild:
            raise ConfigError(
                f"a listener binds {wild[0]} and sip.advertised_host is empty: Via, Contact and "
                "the SDP would advertise that address; set sip.advertised_host to the address "
                "peers reach this node at"
            )

    def _check_files(self) -> None:
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self.tls, name)
            if path and not os.access(path, os.R_OK):
                why = "does not exist" if not os.path.exists(path) else "is not readable"
                raise ConfigError(f"tls.{name}: {path!r} {why}")

    def _check_store_url(self) -> None:
        if not self.store.url:
            return
        from gw.store.client import connect

        try:
            connect(self.store.url)  # parses the URL; no I/O until a command is sent
        except ValueError as exc:
            raise ConfigError(f"store.url: {exc}") from None

    def _check_hook(self) -> None:
        """The routing hook imports and is callable (`run` would load it at start)."""
        spec = self.gateway.routing_hook
        if not spec:
            return
        from gw.gateway.policy import load_hook

        try:
            load_hook(spec)
        except Exception as exc:  # an import runs the user's module: whatever it raises
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            raise ConfigError(f"gateway.routing_hook: cannot load {spec!r}: {detail}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_relay(m: MsrpSection) -> None:
    """The msrp.relay* keys: a relay URI we can AUTH at, and credentials for it."""
    if not m.relay:
        if m.relay_user or m.relay_password:
            raise ConfigError("msrp.relay_user/relay_password are set but msrp.relay is empty")
        return
    from gw.msrp.uri import MsrpUriError, parse_msrp_uri

    try:
        uri = parse_msrp_uri(m.relay.strip())
    except MsrpUriError as exc:
        raise ConfigError(f"msrp.relay must look like msrps://host:port;tcp: {exc}") from None
    if uri.transport.lower() != "tcp" or uri.session_id is not None or uri.user is not None:
        raise ConfigError(
            f"msrp.relay must look like msrps://host:port;tcp (no user, session-id or "
            f"transport other than tcp), got {m.relay!r}"
        )
    if not m.relay_user:
        raise ConfigError("msrp.relay_user is required with msrp.relay (RFC 4976 AUTH)")
    if any(c < " " or c == "\x7f" for c in m.relay_user + m.relay_password):
        raise ConfigError("msrp.relay_user/relay_password must not contain control characters")
    if m.relay_expires < 0:
        raise ConfigError("msrp.relay_expires must be >= 0 (0: the relay picks)")


def parse_msrp_listen(text: str) -> tuple[str, str, int]:
    """`msrp://host:port;tcp` (port 0: OS-picked) -> (scheme, host, port)."""
    m = re.match(r"^(msrps?)://(\[[0-9A-Fa-f:.]+\]|[^:/;\[\]]+):(\d+)(?:;tcp)?$", text.strip())
    if m is None:
        raise ConfigError(f"msrp.listen must look like msrp://host:port;tcp, got {text!r}")
    port = int(m.group(3))
    if port > 65535:
        raise ConfigError(f"msrp.listen port out of range: {text!r}")
    return m.group(1), m.group(2).strip("[]"), port


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert TOML or environment values to the declared type, or say which key is wrong."""
    origin = typing.get_origin(typ)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    if isinstance(typ, types.UnionType):  # pragma: no cover - no such fields yet
        return value
    raise ConfigError(f"{key}: unsupported type")


_REMOVED = {
    "msrp.max_message_size": "removed: gateway.max_page_message_size bounds MSRP messages",
}


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    sec_fields = {f.name: f for f in dataclasses.fields(Config)}
    if section not in sec_fields:
        hint = _did_you_mean(section, sec_fields)
        raise ConfigError(f"{source}: unknown section [{section}]{hint}")
    sec = getattr(cfg, section)
    hints = typing.get_type_hints(type(sec))
    if key not in hints:
        removed = _REMOVED.get(f"{section}.{key}")
        if removed:
            raise ConfigError(f"{source}: {section}.{key} was {removed}")
        hint = _did_you_mean(key, hints)
        raise ConfigError(f"{source}: unknown key {section}.{key}{hint}")
    setattr(sec, key, _coerce(f"{section}.{key}", value, hints[key]))


def _env_typo(name: str) -> None:
    """MSRPGW_GATEWAY_HASH_SIZE (one underscore) would be silently ignored: say so."""
    rest = name[len("MSRPGW_") :].lower()
    for section, kind in typing.get_type_hints(Config).items():
        prefix = section + "_"
        if rest.startswith(prefix) and rest[len(prefix) :]:
            key = rest[len(prefix) :]
            if key in typing.get_type_hints(kind):
                right = f"MSRPGW_{section.upper()}__{key.upper()}"
                raise ConfigError(f"{name} is not read: did you mean {right}?")


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    cfg = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            for key, value in values.items():
                _apply(cfg, section, key, value, str(path))
    env = os.environ if env is None else env
    for name, value in env.items():
        if not name.startswith("MSRPGW_"):
            continue
        if "__" not in name:
            _env_typo(name)
            continue
        section, _, key = name[len("MSRPGW_") :].partition("__")
        _apply(cfg, section.lower(), key.lower(), value, name)
    cfg.validate()
    return cfg
