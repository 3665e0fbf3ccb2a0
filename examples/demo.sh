#!/usr/bin/env bash
# Two overlapping `cachelock run`s on one machine with no server: the embedded SQLite default.
# Run it with `npm run demo` (which builds first).
set -euo pipefail
cd "$(dirname "$0")/.."

cachelock() { node dist/cli/main.js "$@"; }
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }

# A lock file of the demo's own, so that it never meets a real lock called "demo".
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export CACHELOCK_DB="$state/locks.sqlite"
unset CACHELOCK_URL

step "1. Job A takes the lock \"demo\" and runs for 3 seconds (in the background)"
cachelock run demo -- sh -c 'echo "   [A] running, fence $CACHELOCK_FENCE"; sleep 3; echo "   [A] done"' &
job_a=$!
until cachelock status demo --json | grep -q '"held":true'; do sleep 0.1; done

step "2. cachelock status demo"
cachelock status demo

step "3. Job B, without --wait: the lock is held, so B skips its command and exits 75"
status=0
cachelock run demo -- echo "   [B] this never prints" || status=$?
echo "   B exited with $status"
if [ "$status" -ne 75 ]; then
  echo "demo: expected exit status 75 from B" >&2
  exit 1
fi

step "4. Job C, with --wait 10s: waits (stderr says who holds the lock), then runs once A is done"
cachelock run demo --wait 10s -- sh -c 'echo "   [C] running, fence $CACHELOCK_FENCE"'
wait "$job_a"

step "5. cachelock status demo"
cachelock status demo

step "Done: A and C ran one at a time and B skipped, with no server and no configuration."
echo "The locks lived in a SQLite file: a temporary one here; by default"
echo "~/.local/state/cachelock/locks.sqlite, shared by every cachelock of this user."
