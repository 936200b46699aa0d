"""The package as the image gets it: a wheel built from exactly the files the Dockerfile's
build stage copies, installed into a fresh virtual environment, runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from gw import __version__
from tests.deploy.helpers import DEPLOY, REPO, run
from tests.deploy.test_dockerfile import DOCKERFILE, parse


def build_stage_sources() -> list[str]:
    build = parse(DOCKERFILE)[0]
    return [s for i in build if i.keyword == "COPY" for s in i.operands[:-1]]


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in build_stage_sources():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, context / source)
    wheels = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=context,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [wheel] = wheels.glob("msrp_gw-*.whl")
    assert wheel.name.startswith(f"msrp_gw-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gw/py.typed" in names and "gw/cli.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the license ships"
    assert not any(n.startswith("tests/") for n in names), "tests stay out of the wheel"
    assert "msrp-gw = gw.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    msrp_gw = str(venv / "bin" / "msrp-gw")
    version = run([msrp_gw, "--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"msrp-gw {__version__}"
    # the image's own config file, as the container's entrypoint loads it
    env = {
        "PATH": str(venv / "bin"),
        "MSRPGW_MGMT__TOKEN": "t",
        "MSRPGW_GATEWAY__ALLOWED_DESTINATIONS": "10.0.0.0/8",
        "MSRPGW_SIP__ADVERTISED_HOST": "192.0.2.7",
    }
    config = [msrp_gw, "check-config", "--config", str(DEPLOY / "gw.toml")]
    # no `embedded` extra in the image: without a shared store it has no store at all
    checked = run(config, cwd=tmp_path, env=env)
    assert checked.returncode == 2 and "msrp-gw[embedded]" in checked.stderr, checked.stderr
    checked = run(config, cwd=tmp_path, env={**env, "MSRPGW_STORE__URL": "redis://redis:6379/0"})
    assert checked.returncode == 0 and checked.stdout.strip() == "config ok", checked.stderr
    # the package imported is the installed one, not this checkout
    where = run([str(python), "-c", "import gw; print(gw.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
