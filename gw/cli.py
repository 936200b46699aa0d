"""The `msrp-gw` command."""

from __future__ import annotations

import argparse
import asyncio
import sys

from gw import __version__
from gw.config import ConfigError, load_config
from gw.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msrp-gw", description=__doc__)
    parser.add_argument("--version", action="version", version=f"msrp-gw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a gateway node")
    run.add_argument("--config", "-c", help="TOML config file")
    check = sub.add_parser("check-config", help="validate the configuration and exit")
    check.add_argument("--config", "-c", help="TOML config file")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"msrp-gw: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("config ok")
        return 0
    setup_logging(cfg.log.level, cfg.log.format, cfg.node.id)
    from gw.node import run_node

    try:
        return asyncio.run(run_node(cfg))
    except OSError as exc:
        print(f"msrp-gw: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
