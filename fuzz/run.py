"""Run one fuzz target, or all of them one after the other, under atheris (libFuzzer).

    python -m fuzz.run sip_message --seconds 600     # a long run of one target
    python -m fuzz.run all --seconds 7               # the CI smoke: about a minute in all

The committed corpus (fuzz/corpus/<target>/, seeded from RFC examples) is read; what the run
finds new goes to a scratch directory (--work, default a temporary one), never into the
committed corpus. A finding (an exception other than the parser's own error, a crash, a
timeout) is written there as crash-*/timeout-* and the run exits non-zero; to keep it fixed,
add the input to the target's corpus once the bug is fixed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def run_one(target: str, seconds: int, work: Path) -> int:
    """Fuzz `target` for `seconds` in a child process (libFuzzer exits the process)."""
    scratch = work / target
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "fuzz.run",
        "--child",
        target,
        str(scratch),
        str(CORPUS / target),
        f"-max_total_time={seconds}",
        "-timeout=5",
        "-rss_limit_mb=1024",
        "-max_len=65536",
        f"-artifact_prefix={scratch}/",
        "-print_final_stats=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    lines = done.stderr.splitlines()
    progress = [ln for ln in lines if ln.startswith("#") and " cov: " in ln]
    units = [ln.split()[-1] for ln in lines if ln.startswith("stat::number_of_executed_units")]
    summary = (progress[-1] if progress else "").split("exec/s")[0].strip()
    print(f"{target}: exit {done.returncode}, {units[-1] if units else '?'} runs; {summary}")
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
    return done.returncode


def child(target: str, argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["gw"]):
        from fuzz.targets import TARGETS

    atheris.Setup([sys.argv[0], *argv], TARGETS[target])
    atheris.Fuzz()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    from fuzz.targets import TARGETS

    ap = argparse.ArgumentParser(prog="python -m fuzz.run")
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--seconds", type=int, default=60, help="per target")
    ap.add_argument("--work", type=Path, help="scratch corpus and findings (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="msrpgw-fuzz-"))
    names = list(TARGETS) if args.target == "all" else [args.target]
    failed = [n for n in names if run_one(n, args.seconds, work) != 0]
    print(f"scratch corpus and findings: {work}")
    if failed:
        print(f"findings in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
