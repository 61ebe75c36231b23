#!/usr/bin/env bash
# Keep one `make run` component alive: run it, and when it dies (a crash, SIGKILL, OOM), start it
# again after a backoff, until the supervisor stops it.
#
#   scripts/respawn.sh NAME COMMAND [ARGS...]        (a Procfile line: `NAME: exec scripts/respawn.sh NAME ...`)
#
# Why honcho + this wrapper and not supervisord: the Procfile stays the one list of processes
# (tests, docs and run.sh read it), honcho keeps each line's output prefixed with its name in one
# terminal, and honcho stops a line by signalling its whole process group (SIGTERM, SIGKILL 5 s
# later), which reaches this wrapper and the component alike, so nothing is left behind.
# supervisord would need its own ini repeating every command, interleaves output unprefixed, and
# restarts a process that had been running at once with no backoff (its BACKOFF state only covers
# exits within startsecs). What honcho lacks is only the restart, which is this file.
#
# Backoff: PRECIS_RESPAWN_DELAY_S (1) after the first death, doubling up to PRECIS_RESPAWN_MAX_DELAY_S
# (30); a run that lasted PRECIS_RESPAWN_RESET_S (60) or more starts the count again. After
# PRECIS_RESPAWN_MAX_FAILURES (6) deaths in a row that each came sooner than that, the wrapper gives
# up and exits with the component's status: honcho then stops the whole stack (a component that
# cannot start, e.g. a port taken, still ends `make run` instead of looping forever).
# PRECIS_RESPAWN=0 runs the command once, as before (exec, no wrapper left).
#
# Stopping: SIGTERM/SIGINT to the wrapper's process group (honcho's way: os.killpg) stops the
# component (it gets the signal itself, once) and the wrapper waits for it and exits with its
# status, restarting nothing. The wrapper does not pass signals on: the component would get a
# second SIGTERM, which uvicorn takes as "exit now" (no graceful shutdown). Signal the group.
set -uo pipefail
name="$1"; shift
[ "${PRECIS_RESPAWN:-1}" = 0 ] && exec "$@"

delay0="${PRECIS_RESPAWN_DELAY_S:-1}"
max_delay="${PRECIS_RESPAWN_MAX_DELAY_S:-30}"
reset_s="${PRECIS_RESPAWN_RESET_S:-60}"
max_failures="${PRECIS_RESPAWN_MAX_FAILURES:-6}"

stopping=0
trap 'stopping=1' TERM INT

delay="$delay0"
failures=0
while :; do
  started=$(date +%s)
  "$@" &
  pid=$!
  # `wait` returns early when a trapped signal arrives: wait until the component is really gone.
  rc=0
  while :; do
    wait "$pid"; rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$stopping" = 1 ] && exit "$rc"
  ran=$(( $(date +%s) - started ))
  if [ "$ran" -ge "$reset_s" ]; then
    delay="$delay0"; failures=0
  fi
  failures=$((failures + 1))
  if [ "$failures" -ge "$max_failures" ]; then
    echo "[respawn] $name exited (status $rc) $failures times in a row, each within ${reset_s}s: giving up" >&2
    exit "$rc"
  fi
  echo "[respawn] $name exited (status $rc) after ${ran}s; restarting in ${delay}s (restart $failures)" >&2
  sleep "$delay" &
  wait $! 2>/dev/null
  [ "$stopping" = 1 ] && exit "$rc"
  delay=$(( delay * 2 > max_delay ? max_delay : delay * 2 ))
done
