#!/usr/bin/env bash
# A/B CPU per message of two commits on this machine, in one run: `python -m bench.probe` for
# m2s, s2m and setup, alternating BEFORE and AFTER so that the noise hits both alike.
# Only the ratios compare (machines of the pool differ twofold).
# Usage: bench/ab.sh BEFORE [AFTER=HEAD] [ROUNDS=2]     (run nothing else meanwhile)
set -euo pipefail
before=${1:?usage: bench/ab.sh BEFORE [AFTER] [ROUNDS]}
after=${2:-HEAD}
rounds=${3:-2}
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
work="$(mktemp -d)"
trap 'git -C "$here" worktree remove --force "$work/before" >/dev/null 2>&1 || true;
      git -C "$here" worktree remove --force "$work/after" >/dev/null 2>&1 || true;
      rm -rf "$work"' EXIT
git -C "$here" worktree add --detach "$work/before" "$before" >/dev/null 2>&1
git -C "$here" worktree add --detach "$work/after" "$after" >/dev/null 2>&1
for scenario in m2s s2m setup; do
  for round in $(seq "$rounds"); do
    for side in before after; do
      # The node runs `python -m gw.cli` from the worktree: each side runs its own code.
      line=$(cd "$work/$side" && "$py" -m bench.probe "$scenario" --seconds 8 2>&1 | tail -1)
      echo "$scenario round$round $side: $line"
    done
  done
done
