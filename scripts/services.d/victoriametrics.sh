#!/usr/bin/env bash
# VictoriaMetrics 1.79 (Debian bookworm's victoria-metrics) as the time-series DB the tests write to, on
# loopback. It takes InfluxDB line protocol on /write and /api/v2/write and serves /api/v1/export, /query.
#
# Why it looks like this:
# - Data, log and pid file under $SVC_DIR; the Debian package's system service and /var/lib are unused.
# - A non-default port (18428, $DCFLEX_TSDB_PORT) on 127.0.0.1 only; nothing else listens (no
#   graphite/opentsdb/influx TCP listeners are enabled).
# - Every `up` starts from an empty store; `stop-db` / `start-db` keep it for outage tests.
# - Retention is long (100y, $DCFLEX_TSDB_RETENTION) on purpose: it does not bound disk use here (every
#   `up` wipes the store) but it bounds which timestamps are accepted. With a short one, points stamped
#   before now-retention (tests replaying fixed dates) are dropped while the write still answers 204.
# - -search.latencyOffset=0s: by default /api/v1/query and /query_range pretend "now" is 30 s ago, so a
#   point just written is invisible to them. (/api/v1/export is not affected.)
# - -search.disableCache: no rollup-result cache, so a query never answers from before a write.
# - Visibility of fresh writes is NOT immediate even so: samples of a known series are searchable after
#   ~1 s, a new series after up to ~10 s. GET /internal/force_flush makes everything written so far
#   searchable at once; tests call it after writing (see tests/integration/test_services.py).
# - -dedup.minScrapeInterval=1ms: keep one sample per series and millisecond, as InfluxDB keeps one per
#   series and timestamp; a batch re-sent after a write that timed out but landed is not counted twice.
# - Caches are capped at 256 MiB (default: 60% of RAM) since the machine is shared.
#
# Read by scripts/services.sh (see the comment at its top). SVC_DIR, SVC_NAME, ROOT are set by it.

# shellcheck disable=SC2034  # read by scripts/services.sh
SVC_PACKAGES="victoria-metrics"

TSDB_PORT=${DCFLEX_TSDB_PORT:-18428}
TSDB_RETENTION=${DCFLEX_TSDB_RETENTION:-100y}
TSDB_START_TIMEOUT=${DCFLEX_TSDB_START_TIMEOUT:-30}

_vm_which() {  # _vm_which NAME: full path of a binary, also looking in sbin dirs not on PATH
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/bin /usr/sbin /bin /sbin; do
    [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}

_vm_pidfile() { echo "$SVC_DIR/run/victoria-metrics.pid"; }
_vm_log() { echo "$SVC_DIR/log/victoria-metrics.log"; }
_vm_argsfile() { echo "$SVC_DIR/etc/args"; }  # the flags `up` chose, reused by start-db
_vm_data_flag() { echo "-storageDataPath=$SVC_DIR/data"; }

svc_present() {
  _vm_which victoria-metrics >/dev/null || { echo "victoriametrics: missing victoria-metrics" >&2; return 1; }
  command -v curl >/dev/null || { echo "victoriametrics: missing curl (for the readiness check)" >&2; return 1; }
}

_vm_write_args() {
  mkdir -p "$SVC_DIR/etc"
  cat > "$(_vm_argsfile)" <<EOF
$(_vm_data_flag)
-httpListenAddr=127.0.0.1:${TSDB_PORT}
-retentionPeriod=${TSDB_RETENTION}
-search.latencyOffset=0s
-search.disableCache
-dedup.minScrapeInterval=1ms
-memory.allowedBytes=256MiB
-loggerOutput=stderr
EOF
}

_vm_port() {  # the port in the args file (start-db must reuse what `up` chose, not today's env)
  sed -n 's/^-httpListenAddr=.*:\([0-9]*\)$/\1/p' "$(_vm_argsfile)"
}

_vm_is_ours() {  # _vm_is_ours PID: that process runs on our data directory
  tr '\0' '\n' 2>/dev/null < "/proc/$1/cmdline" | grep -qxF -- "$(_vm_data_flag)"
}

_vm_pid() {  # prints the pid of the victoria-metrics running on our data directory, if any
  local pid f p
  f=$(_vm_pidfile)
  if [ -s "$f" ]; then
    # A stale pid file may name a pid the system has since given to another process: check it is ours.
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && _vm_is_ours "$pid"; then echo "$pid"; return 0; fi
  fi
  # No (usable) pid file: look for our data directory in /proc (the kernel cuts names to 15 chars).
  for p in $(pgrep -x victoria-metric 2>/dev/null); do
    _vm_is_ours "$p" && { echo "$p"; return 0; }
  done
  return 1
}

_vm_healthy() {  # _vm_healthy PORT: GET /health answers OK
  [ "$(curl -sf --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null)" = OK ]
}

_vm_port_free() {  # _vm_port_free PORT: fail when something already listens on it
  if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; then
    echo "victoriametrics: port $1 is already in use: $(ss -ltnpH "sport = :$1")" >&2
    return 1
  fi
  return 0
}

_vm_stop_daemon() {  # TERM (it flushes in-memory rows to disk first), wait up to 30 s, then KILL
  local pid i
  if pid=$(_vm_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "victoriametrics: pid $pid did not exit on TERM within 30 s; killing (recent rows are lost)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$(_vm_pidfile)"
}

_vm_fail() {  # _vm_fail MESSAGE: print it with the log tail, stop what was started, fail
  echo "victoriametrics: $1; see $(_vm_log)" >&2
  if [ -s "$(_vm_log)" ]; then
    echo "---- tail $(_vm_log)" >&2
    tail -n 20 "$(_vm_log)" >&2
  fi
  _vm_stop_daemon
  return 1
}

_vm_run() {  # start it on the existing args and data; return when /health answers
  local port deadline bin launcher i pid=""
  local -a args
  port=$(_vm_port)
  bin=$(_vm_which victoria-metrics)
  mapfile -t args < "$(_vm_argsfile)"
  _vm_port_free "$port" || return 1
  mkdir -p "$SVC_DIR/data" "$SVC_DIR/log" "$SVC_DIR/run"
  rm -f "$(_vm_pidfile)"
  # It does not daemonize: run it in its own session (so the caller's process group and terminal do not
  # reach it), with stdio on files (so it holds none of the caller's pipes), and record its pid.
  setsid "$bin" "${args[@]}" </dev/null >>"$(_vm_log)" 2>&1 &
  launcher=$!
  # setsid execs in place (same pid) unless it is a process group leader; then it forks: find the child.
  for i in $(seq 1 50); do
    if _vm_is_ours "$launcher"; then pid=$launcher; break; fi
    pid=$(_vm_pid) && break
    sleep 0.1
  done
  [ -n "$pid" ] || { _vm_fail "victoria-metrics did not start"; return 1; }
  echo "$pid" > "$(_vm_pidfile)"
  deadline=$((SECONDS + TSDB_START_TIMEOUT))
  until _vm_healthy "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then _vm_fail "victoria-metrics exited"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      _vm_fail "victoria-metrics does not answer GET http://127.0.0.1:$port/health after ${TSDB_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.1
  done
  echo "victoriametrics: answering on http://127.0.0.1:$port (pid $pid, log $(_vm_log))"
}

svc_stop() {
  _vm_stop_daemon
}

svc_start() {
  svc_stop  # idempotent: whatever an earlier `up` left running is stopped, then started clean
  rm -rf "$SVC_DIR/data" "$SVC_DIR/log"
  _vm_write_args
  _vm_run
}

svc_version() {  # -version prints the release (empty in Debian's build: then the package's version)
  local bin v
  bin=$(_vm_which victoria-metrics) && v=$("$bin" -version 2>&1 | head -n1) || true
  [ -n "$v" ] || v=$(dpkg-query -W -f='${Version} (Debian package)' victoria-metrics 2>/dev/null) || true
  echo "victoria-metrics ${v:-unknown}"
}

svc_env() {
  local port=$TSDB_PORT
  [ -f "$(_vm_argsfile)" ] && port=$(_vm_port)
  echo "DCFLEX_TEST_TSDB_URL=http://127.0.0.1:$port"
}

# Take the DB away and bring it back with its data, unlike `services.sh up`, which always starts clean.
# For outage tests.
svc_stop_db() {
  _vm_stop_daemon
  echo "victoriametrics: stopped (data kept in $SVC_DIR/data)"
}

svc_start_db() {
  local pid
  if [ ! -f "$(_vm_argsfile)" ]; then
    echo "victoriametrics: no $(_vm_argsfile); run scripts/services.sh up first" >&2
    return 1
  fi
  if pid=$(_vm_pid); then echo "victoriametrics: already running (pid $pid)"; return 0; fi
  _vm_run
}

# Run directly (services.sh sources this file instead) during a test, against the DB `up` started:
#   scripts/services.d/victoriametrics.sh stop-db     stop it (TERM: it flushes to disk first)
#   scripts/services.d/victoriametrics.sh start-db    start it again on the same data
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "$0")/../.." && pwd)
  SVC_NAME=victoriametrics
  SVC_DIR="$ROOT/var/services/$SVC_NAME"
  case "${1:-}" in
    stop-db) svc_stop_db ;;
    start-db) svc_start_db ;;
    *) echo "usage: $0 stop-db|start-db" >&2; exit 2 ;;
  esac
fi
