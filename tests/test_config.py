"""gw.config: TOML plus MSRPGW_* environment overrides, types, validation, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gw.config import Config, ConfigError, load_config, parse_msrp_listen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def refused(env: dict[str, str] | None = None, toml: Path | None = None) -> str:
    """The ConfigError's text; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(toml, env=env or {})
    text = str(info.value)
    assert text and "\n" not in text, text
    return text


# -- defaults -----------------------------------------------------------------------------------
def test_defaults_are_the_opensips_ones() -> None:
    cfg = load_config(env={})
    g = cfg.gateway
    assert g.hash_size == 10
    assert g.cleanup_interval == 60
    assert g.session_timeout == 43200
    assert g.message_timeout == 7200
    assert g.content_types == "text/plain"
    assert g.reply_mode == "confirm"
    assert g.delivery_timeout == 10.0
    assert g.require_success_report is False
    assert g.key_template == "{page_aor}-{msrp_aor}"
    assert cfg.sip.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert cfg.msrp.listen == "msrp://127.0.0.1:2855;tcp"
    assert cfg.mgmt.token == ""


def test_default_config_validates() -> None:
    Config().validate()


def test_no_file_and_no_env_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MSRPGW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MSRPGW_GATEWAY__HASH_SIZE", "12")
    assert load_config().gateway.hash_size == 12, "env=None reads os.environ"


# -- TOML ---------------------------------------------------------------------------------------
def test_toml_sets_every_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[node]
id = "gw7"
[sip]
listen = ["udp:0.0.0.0:5062", "tcp:[::1]:5062"]
advertised_host = "192.0.2.10"
t1 = 0.25
t2 = 2
[gateway]
hash_size = 12
session_timeout = 600
message_timeout = 300
content_types = "text/plain, message/cpim"
require_success_report = true
delivery_timeout = 3.5
allowed_destinations = "example.com, *.carrier.net 10.0.0.0/8"
[msrp]
listen = "msrp://[::1]:0"
[mgmt]
listen = "0.0.0.0:8080"
token = "secret"
""",
    )
    cfg = load_config(path, env={})
    assert cfg.node.id == "gw7"
    assert cfg.sip.listen == ["udp:0.0.0.0:5062", "tcp:[::1]:5062"]
    assert (cfg.sip.t1, cfg.sip.t2) == (0.25, 2.0)
    assert isinstance(cfg.sip.t2, float)
    g = cfg.gateway
    assert (g.hash_size, g.session_timeout, g.message_timeout) == (12, 600, 300)
    assert g.content_types == "text/plain, message/cpim"
    assert g.require_success_report is True
    assert g.delivery_timeout == 3.5
    assert g.allowed_destinations == "example.com, *.carrier.net 10.0.0.0/8"
    assert parse_msrp_listen(cfg.msrp.listen) == ("msrp", "::1", 0)


def test_env_overrides_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nhash_size = 12\nreply_mode = "accept"\n')
    cfg = load_config(
        path,
        env={
            "MSRPGW_GATEWAY__HASH_SIZE": "14",
            "MSRPGW_SIP__LISTEN": "udp:127.0.0.1:5070, tcp:127.0.0.1:5070,",
            "MSRPGW_GATEWAY__REQUIRE_SUCCESS_REPORT": "yes",
            "MSRPGW_SIP__T1": "0.1",
            "MSRPGW_SIP__T2": "0.4",
            "MSRPGW_GATEWAY__TRACE_KEYS": "a-b,c-d",
            "MSRPGW_TLS__VERIFY_PEER": "off",
            "MSRPGW_LOG__LEVEL": "debug",
            "OTHER_VAR": "ignored",
            "MSRPGW_NO_SEPARATOR": "ignored",
        },
    )
    assert cfg.gateway.hash_size == 14
    assert cfg.gateway.reply_mode == "accept", "TOML value kept when env does not set it"
    assert cfg.sip.listen == ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
    assert cfg.gateway.require_success_report is True
    assert (cfg.sip.t1, cfg.sip.t2) == (0.1, 0.4)
    assert cfg.gateway.trace_keys == ["a-b", "c-d"]
    assert cfg.tls.verify_peer is False
    assert cfg.log.level == "debug"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
    ],
)
def test_env_bools(text: str, value: bool) -> None:
    cfg = load_config(env={"MSRPGW_GATEWAY__REQUIRE_SUCCESS_REPORT": text})
    assert cfg.gateway.require_success_report is value


def test_env_section_and_key_are_case_insensitive() -> None:
    cfg = load_config(env={"MSRPGW_Gateway__Hash_Size": "11"})
    assert cfg.gateway.hash_size == 11


# -- unknown names ----------------------------------------------------------------------------
def test_unknown_toml_section_is_refused(tmp_path: Path) -> None:
    text = refused(toml=write(tmp_path, "[gatway]\nhash_size = 3\n"))
    assert "[gatway]" in text and "gw.toml" in text and "did you mean gateway?" in text


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    text = refused(toml=write(tmp_path, "[gateway]\nhash_sise = 3\n"))
    assert "gateway.hash_sise" in text and "did you mean hash_size?" in text


def test_a_removed_key_says_what_replaced_it(tmp_path: Path) -> None:
    text = refused(toml=write(tmp_path, "[msrp]\nmax_message_size = 0\n"))
    assert "msrp.max_message_size was removed" in text and "max_page_message_size" in text


def test_an_env_name_with_one_underscore_is_not_ignored() -> None:
    text = refused({"MSRPGW_GATEWAY_HASH_SIZE": "12"})
    assert text == "MSRPGW_GATEWAY_HASH_SIZE is not read: did you mean MSRPGW_GATEWAY__HASH_SIZE?"
    load_config(env={"MSRPGW_VENV": "/opt/venv"})  # not a setting's name: left alone


def test_unknown_env_section_and_key_are_refused() -> None:
    text = refused({"MSRPGW_GATWAY__HASH_SIZE": "3"})
    assert "MSRPGW_GATWAY__HASH_SIZE" in text and "[gatway]" in text
    text = refused({"MSRPGW_GATEWAY__HASH_SISE": "3"})
    assert "gateway.hash_sise" in text


def test_toml_top_level_value_is_refused(tmp_path: Path) -> None:
    assert "[hash_size] must be a table" in refused(toml=write(tmp_path, "hash_size = 3\n"))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    assert "not found" in refused(toml=tmp_path / "nope.toml")
    assert "gw.toml" in refused(toml=write(tmp_path, "[gateway\nhash_size = 3\n"))


# -- types ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"MSRPGW_GATEWAY__HASH_SIZE": "ten"}, "gateway.hash_size must be an integer"),
        ({"MSRPGW_GATEWAY__HASH_SIZE": "10.5"}, "gateway.hash_size must be an integer"),
        ({"MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "soon"}, "gateway.delivery_timeout must be a number"),
        ({"MSRPGW_GATEWAY__REQUIRE_SUCCESS_REPORT": "maybe"}, "gateway.require_success_report"),
    ],
)
def test_env_type_errors_name_the_key(env: dict[str, str], key: str) -> None:
    assert key in refused(env)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("[gateway]\nhash_size = true", "gateway.hash_size must be an integer"),
        ("[gateway]\nhash_size = 10.7", "gateway.hash_size must be an integer"),
        ("[gateway]\nhash_size = [1]", "gateway.hash_size must be an integer"),
        ("[gateway]\ndelivery_timeout = false", "gateway.delivery_timeout must be a number"),
        ("[gateway]\nrequire_success_report = 1", "gateway.require_success_report"),
        ("[gateway]\nreply_mode = true", "gateway.reply_mode must be a string"),
        ("[sip]\nlisten = [5060]", "sip.listen must be a list of strings"),
    ],
)
def test_toml_type_errors_name_the_key(tmp_path: Path, line: str, key: str) -> None:
    assert key in refused(toml=write(tmp_path, line + "\n"))


def test_toml_integral_float_for_int_is_taken(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[gateway]\nhash_size = 12.0\n"), env={})
    assert cfg.gateway.hash_size == 12


# -- validation: one line naming the key --------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "key"),
    [
        (
            {"MSRPGW_GATEWAY__SESSION_TIMEOUT": "100", "MSRPGW_GATEWAY__MESSAGE_TIMEOUT": "200"},
            "gateway.session_timeout",
        ),
        ({"MSRPGW_GATEWAY__SESSION_TIMEOUT": "7199"}, "gateway.session_timeout"),
        ({"MSRPGW_GATEWAY__REPLY_MODE": "later"}, "gateway.reply_mode"),
        ({"MSRPGW_GATEWAY__MSRP_SETUP": "holdconn"}, "gateway.msrp_setup"),
        ({"MSRPGW_MGMT__LISTEN": "0.0.0.0:8080"}, "mgmt.token"),
        ({"MSRPGW_MGMT__LISTEN": "192.0.2.1:8080"}, "mgmt.token"),
        ({"MSRPGW_MGMT__LISTEN": "0.0.0.0:8080", "MSRPGW_MGMT__TOKEN": "   "}, "mgmt.token"),
        ({"MSRPGW_MGMT__TOKEN": " secret"}, "mgmt.token"),
        ({"MSRPGW_MGMT__TOKEN": "se\tcret"}, "mgmt.token"),
        (
            {"MSRPGW_SIP__LISTEN": "udp:0.0.0.0:5060", "MSRPGW_SIP__ADVERTISED_HOST": "192.0.2.1"},
            "gateway.allowed_destinations",
        ),
        ({"MSRPGW_SIP__LISTEN": "tcp:[2001:db8::1]:5060"}, "sip.outbound_proxy"),
        ({"MSRPGW_GATEWAY__ALLOWED_DESTINATIONS": "10.0.0.0/33"}, "gateway.allowed_destinations"),
        ({"MSRPGW_GATEWAY__ALLOWED_DESTINATIONS": "bad host!"}, "gateway.allowed_destinations"),
        ({"MSRPGW_MGMT__LISTEN": "127.0.0.1"}, "mgmt.listen"),
        ({"MSRPGW_MGMT__LISTEN": "127.0.0.1:99999"}, "mgmt.listen"),
        ({"MSRPGW_SIP__LISTEN": "sctp:127.0.0.1:5060"}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": "udp:127.0.0.1"}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": "udp::5060"}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": "udp:127.0.0.1:http"}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": "udp:127.0.0.1:70000"}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": ","}, "sip.listen"),
        ({"MSRPGW_SIP__LISTEN": "tls:127.0.0.1:5061"}, "tls.cert_file"),
        ({"MSRPGW_MSRP__LISTEN": "msrps://127.0.0.1:2856;tcp"}, "tls.cert_file"),
        ({"MSRPGW_MSRP__LISTEN": "msrp://127.0.0.1:2855;udp"}, "msrp.listen"),
        ({"MSRPGW_MSRP__LISTEN": "127.0.0.1:2855"}, "msrp.listen"),
        ({"MSRPGW_MSRP__LISTEN": "msrp://127.0.0.1:70000;tcp"}, "msrp.listen"),
        ({"MSRPGW_GATEWAY__HASH_SIZE": "0"}, "gateway.hash_size"),
        ({"MSRPGW_GATEWAY__HASH_SIZE": "-1"}, "gateway.hash_size"),
        ({"MSRPGW_GATEWAY__HASH_SIZE": "31"}, "gateway.hash_size"),
        ({"MSRPGW_GATEWAY__CLEANUP_INTERVAL": "0"}, "gateway.cleanup_interval"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": "mymodule.decide"}, "gateway.routing_hook"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": ":"}, "gateway.routing_hook"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": "mymodule:"}, "gateway.routing_hook"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": "a b:c"}, "gateway.routing_hook"),
        ({"MSRPGW_GATEWAY__KEY_TEMPLATE": "{page_aor}-{callee}"}, "gateway.key_template"),
        ({"MSRPGW_GATEWAY__KEY_TEMPLATE": "{0}"}, "gateway.key_template"),
        ({"MSRPGW_GATEWAY__KEY_TEMPLATE": "{page_aor"}, "gateway.key_template"),
        ({"MSRPGW_GATEWAY__KEY_TEMPLATE": "{page_aor.nope}"}, "gateway.key_template"),
        ({"MSRPGW_GATEWAY__CONTENT_TYPES": " , "}, "gateway.content_types"),
        ({"MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "0"}, "gateway.delivery_timeout"),
        ({"MSRPGW_GATEWAY__SETUP_TIMEOUT": "-1"}, "gateway.setup_timeout"),
        ({"MSRPGW_GATEWAY__MAX_QUEUED_MESSAGES": "0"}, "gateway.max_queued_messages"),
        ({"MSRPGW_GATEWAY__MAX_QUEUED_BYTES": "0"}, "gateway.max_queued_bytes"),
        ({"MSRPGW_SIP__T1": "5", "MSRPGW_SIP__T2": "4"}, "sip.t1"),
        ({"MSRPGW_SIP__T1": "0"}, "sip.t1"),
        ({"MSRPGW_CLUSTER__HEARTBEAT_TTL": "0"}, "cluster.heartbeat_ttl"),
        ({"MSRPGW_MSRP__CHUNK_SIZE": "0"}, "msrp.chunk_size"),
        ({"MSRPGW_MSRP__CHUNK_SIZE": "4096", "MSRPGW_MSRP__MAX_CHUNK_SIZE": "1024"}, "chunk_size"),
        ({"MSRPGW_LOG__LEVEL": "verbose"}, "log.level"),
        # issue 15 §1: what check-config used to accept and `run` died on
        ({"MSRPGW_GATEWAY__RETRY_AFTER": "-5"}, "gateway.retry_after must be >= 0"),
        ({"MSRPGW_GATEWAY__MAX_PAGE_MESSAGE_SIZE": "-1"}, "gateway.max_page_message_size"),
        ({"MSRPGW_LOG__FORMAT": "yaml"}, "log.format must be auto, json or text"),
        ({"MSRPGW_GATEWAY__CONTENT_TYPES": "text/plain, garbage"}, "'garbage' is not a MIME"),
        ({"MSRPGW_STORE__URL": "mysql://x"}, "store.url: store URL must start with"),
        ({"MSRPGW_TLS__CERT_FILE": "/nonexistent/c.pem"}, "tls.cert_file: '/nonexistent"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": "no_such_mod:decide"}, "gateway.routing_hook: cannot"),
        ({"MSRPGW_GATEWAY__ROUTING_HOOK": "json:no_such"}, "AttributeError"),
        ({"MSRPGW_SIP__LISTEN": "udp:0.0.0.0:5060"}, "sip.advertised_host"),
        ({"MSRPGW_MSRP__LISTEN": "msrp://0.0.0.0:2855;tcp"}, "sip.advertised_host"),
    ],
)
def test_validation_names_the_key(env: dict[str, str], key: str) -> None:
    assert key in refused(env)


def test_session_timeout_below_message_timeout_says_the_values() -> None:
    text = refused(
        {"MSRPGW_GATEWAY__SESSION_TIMEOUT": "60", "MSRPGW_GATEWAY__MESSAGE_TIMEOUT": "90"}
    )
    assert "gateway.session_timeout" in text and "gateway.message_timeout" in text
    assert "60 < 90" in text


def test_validation_accepts_the_edges(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("checked for existence only; run loads it")
    cfg = load_config(
        env={
            "MSRPGW_GATEWAY__SESSION_TIMEOUT": "300",
            "MSRPGW_GATEWAY__MESSAGE_TIMEOUT": "300",  # equal is fine
            "MSRPGW_GATEWAY__HASH_SIZE": "30",
            "MSRPGW_GATEWAY__REPLY_MODE": "accept",
            "MSRPGW_GATEWAY__MSRP_SETUP": "none",
            "MSRPGW_GATEWAY__ROUTING_HOOK": "tests.gateway.hookmod:decide",
            "MSRPGW_GATEWAY__KEY_TEMPLATE": "{msrp_user}@{msrp_host}/{page_user}@{page_host}",
            "MSRPGW_SIP__LISTEN": "tls:127.0.0.1:5061,udp:[::1]:65535",
            "MSRPGW_MSRP__LISTEN": "msrps://127.0.0.1:2856;tcp",
            "MSRPGW_TLS__CERT_FILE": str(cert),
            "MSRPGW_TLS__KEY_FILE": str(cert),
            "MSRPGW_MGMT__LISTEN": "[::1]:8080",
        }
    )
    assert cfg.gateway.hash_size == 30
    cfg = load_config(env={"MSRPGW_MGMT__LISTEN": "0.0.0.0:8080", "MSRPGW_MGMT__TOKEN": "t0ken"})
    assert cfg.mgmt.listen == "0.0.0.0:8080"
    for host in ("localhost", "127.0.0.1"):
        load_config(env={"MSRPGW_MGMT__LISTEN": f"{host}:0"})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"MSRPGW_SIP__UDP_BUFFER": "-1"}, "sip.udp_buffer must be >= 0"),
        ({"MSRPGW_GATEWAY__MAX_PENDING_SETUPS": "0"}, "gateway.max_pending_setups must be > 0"),
    ],
)
def test_overload_limits_are_validated(env: dict[str, str], key: str) -> None:
    assert key in refused(env)


# -- the reference stays whole (issue 15 §1) ---------------------------------------------------
def test_every_setting_is_documented_in_its_section_and_the_complete_example() -> None:
    import dataclasses
    import re
    import tomllib

    from gw.config import Config

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    example = tomllib.loads(
        doc.split("## Complete example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    )
    missing = []
    for section in dataclasses.fields(Config):
        part = doc.split(f"### `[{section.name}]`", 1)
        assert len(part) == 2, f"no [{section.name}] section in configuration.md"
        table = part[1].split("\n### ", 1)[0]
        keys = set(re.findall(r"^\| `([a-z_0-9]+)` \|", table, re.M))
        for name in (f.name for f in dataclasses.fields(getattr(Config(), section.name))):
            if name not in keys:
                missing.append(f"{section.name}.{name} (table)")
            if name not in example.get(section.name, {}):
                missing.append(f"{section.name}.{name} (complete example)")
    assert not missing, f"undocumented in docs/configuration.md: {missing}"
