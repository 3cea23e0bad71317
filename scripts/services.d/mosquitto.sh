#!/usr/bin/env bash
# Mosquitto 2.0 (Debian bookworm's mosquitto) as the MQTT broker the tests talk to, on loopback.
#
# Why it looks like this:
# - Its own config, persistence, log and pid file under $SVC_DIR; /etc/mosquitto and the system service
#   (which the Debian package installs but policy-rc.d keeps from starting) are never used.
# - A non-default port (18830, $DCFLEX_MQTT_PORT) on 127.0.0.1 only, so a site's broker on 1883 is never
#   reached by mistake and nothing is exposed; anonymous clients are allowed on that listener.
# - Persistence is on (autosaved every 2 s and on a clean stop), so retained messages, persistent sessions
#   and their queued QoS 1/2 messages survive `stop-broker` / `start-broker`; tests use those to take the
#   broker away mid-test. Every `up` starts from an empty store.
# - Readiness is an MQTT CONNECT/CONNACK exchange over bash's /dev/tcp, not just an open port, so no
#   client package is needed and "answers" means "accepts an anonymous MQTT session".
# - It stays the user that starts it (`user` = that user): as root it would otherwise drop to the
#   `mosquitto` user, which cannot write under $SVC_DIR.
#
# Read by scripts/services.sh (see the comment at its top). SVC_DIR, SVC_NAME, ROOT are set by it.

# shellcheck disable=SC2034  # read by scripts/services.sh
SVC_PACKAGES="mosquitto"

MQTT_PORT=${DCFLEX_MQTT_PORT:-18830}
MQTT_START_TIMEOUT=${DCFLEX_MQTT_START_TIMEOUT:-15}

_mq_which() {  # _mq_which NAME: full path of a binary, also looking in sbin dirs not on PATH
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/sbin /usr/bin /sbin /bin; do
    [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}

_mq_conf() { echo "$SVC_DIR/etc/mosquitto.conf"; }
_mq_pidfile() { echo "$SVC_DIR/run/mosquitto.pid"; }
_mq_log() { echo "$SVC_DIR/log/mosquitto.log"; }

svc_present() {
  _mq_which mosquitto >/dev/null || { echo "mosquitto: missing mosquitto" >&2; return 1; }
}

_mq_write_config() {
  mkdir -p "$SVC_DIR/etc" "$SVC_DIR/data" "$SVC_DIR/log" "$SVC_DIR/run"
  cat > "$(_mq_conf)" <<EOF
# Written by scripts/services.d/mosquitto.sh on every \`services.sh up\`; edits here are lost.
per_listener_settings false
listener ${MQTT_PORT} 127.0.0.1
allow_anonymous true
user $(id -un)
pid_file $(_mq_pidfile)

persistence true
persistence_location ${SVC_DIR}/data/
persistence_file mosquitto.db
autosave_on_changes false
autosave_interval 2

# Room for a burst of QoS 1 telemetry to an offline persistent session, but bounded.
max_inflight_messages 100
max_queued_messages 10000
max_packet_size 1048576
set_tcp_nodelay true
sys_interval 10

log_dest file $(_mq_log)
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
}

_mq_is_ours() {  # _mq_is_ours PID: that process runs with our config file among its arguments
  tr '\0' '\n' 2>/dev/null < "/proc/$1/cmdline" | grep -qxF "$(_mq_conf)"
}

_mq_pid() {  # prints the pid of the mosquitto running our config, if any
  local pid f p
  f=$(_mq_pidfile)
  if [ -s "$f" ]; then
    # A stale pid file may name a pid the system has since given to another process: check it is ours.
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && _mq_is_ours "$pid"; then echo "$pid"; return 0; fi
  fi
  # No (usable) pid file, e.g. it was removed while the broker ran: look for our config in /proc.
  for p in $(pgrep -x mosquitto 2>/dev/null); do
    _mq_is_ours "$p" && { echo "$p"; return 0; }
  done
  return 1
}

_mq_probe() {  # succeeds when the broker accepts an anonymous MQTT 3.1.1 session (CONNACK code 0)
  # CONNECT: clean session, keepalive 10 s, client id "dcflex-svc-probe"; then DISCONNECT.
  # shellcheck disable=SC2016  # the inner script expands its own $1 and $ack
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x10\x1c\x00\x04MQTT\x04\x02\x00\x0a\x00\x10dcflex-svc-probe" >&3
    ack=$(head -c 4 <&3 | od -An -tx1 | tr -d " \n")
    printf "\xe0\x00" >&3 || true
    [ "$ack" = 20020000 ]
  ' _ "$1" 2>/dev/null
}

_mq_port() {  # the port in the config file (start-broker must reuse what `up` wrote, not today's env)
  awk '$1 == "listener" {print $2; exit}' "$(_mq_conf)"
}

_mq_port_free() {  # _mq_port_free PORT: fail when something already listens on it
  if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; then
    echo "mosquitto: port $1 is already in use: $(ss -ltnpH "sport = :$1")" >&2
    return 1
  fi
  return 0
}

_mq_stop_daemon() {  # TERM (mosquitto saves its store on the way out), wait up to 10 s, then KILL
  local pid i
  if pid=$(_mq_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "mosquitto: pid $pid did not exit on TERM; killing (unsaved state is lost)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$(_mq_pidfile)"
}

_mq_run() {  # start the daemon on the existing config and store; return when it answers
  local port deadline started log
  port=$(_mq_port)
  log=$(_mq_log)
  _mq_port_free "$port" || return 1
  rm -f "$(_mq_pidfile)"
  mkdir -p "$SVC_DIR/log" "$SVC_DIR/run"
  # -d: it forks and the parent returns; errors in the child (e.g. a port taken meanwhile) show up as a
  # dead or missing pid below. stdio goes to a file so nothing holds the caller's pipes open.
  if ! "$(_mq_which mosquitto)" -c "$(_mq_conf)" -d </dev/null >>"$SVC_DIR/log/mosquitto.out" 2>&1; then
    _mq_fail "mosquitto did not start"
    return 1
  fi
  started=$SECONDS
  deadline=$((SECONDS + MQTT_START_TIMEOUT))
  until _mq_probe "$port"; do
    if _mq_died "$started"; then _mq_fail "mosquitto exited"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      _mq_fail "mosquitto does not accept an MQTT connection on 127.0.0.1:$port after ${MQTT_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.1
  done
  echo "mosquitto: answering on 127.0.0.1:$port (pid $(_mq_pid || echo '?'), log $log)"
}

_mq_died() {  # _mq_died SINCE: the daemon is gone: its pid file names a dead process, or none appeared
  # within 3 s of SINCE (the forked child writes it; a child that fails early never does).
  local pid f
  f=$(_mq_pidfile)
  if [ -s "$f" ]; then
    pid=$(cat "$f" 2>/dev/null || true)
    [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null
    return
  fi
  [ $((SECONDS - $1)) -ge 3 ]
}

_mq_fail() {  # _mq_fail MESSAGE: print it with the log tails, stop what was started, fail
  local f
  echo "mosquitto: $1; see $(_mq_log)" >&2
  for f in "$(_mq_log)" "$SVC_DIR/log/mosquitto.out"; do
    [ -s "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 20 "$f" >&2
  done
  _mq_stop_daemon
  return 1
}

svc_stop() {
  _mq_stop_daemon
}

svc_start() {
  svc_stop  # idempotent: whatever an earlier `up` left running is stopped, then started clean
  rm -rf "$SVC_DIR/data" "$SVC_DIR/log"
  _mq_write_config
  _mq_run
}

svc_env() {
  echo "DCFLEX_TEST_MQTT_HOST=127.0.0.1"
  if [ -f "$(_mq_conf)" ]; then
    echo "DCFLEX_TEST_MQTT_PORT=$(_mq_port)"
  else
    echo "DCFLEX_TEST_MQTT_PORT=$MQTT_PORT"
  fi
}

# Take the broker away and bring it back with its store (retained messages, persistent sessions and
# their queued messages), unlike `services.sh up`, which always starts clean. For outage tests.
svc_stop_broker() {
  _mq_stop_daemon
  echo "mosquitto: stopped (store kept in $SVC_DIR/data)"
}

svc_start_broker() {
  local pid
  if [ ! -f "$(_mq_conf)" ]; then echo "mosquitto: no $(_mq_conf); run scripts/services.sh up first" >&2; return 1; fi
  if pid=$(_mq_pid); then echo "mosquitto: already running (pid $pid)"; return 0; fi
  _mq_run
}

# Run directly (services.sh sources this file instead) during a test, against the broker `up` started:
#   scripts/services.d/mosquitto.sh stop-broker     stop it (TERM: it saves its store first)
#   scripts/services.d/mosquitto.sh start-broker    start it again on the same config and store
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "$0")/../.." && pwd)
  SVC_NAME=mosquitto
  SVC_DIR="$ROOT/var/services/$SVC_NAME"
  case "${1:-}" in
    stop-broker) svc_stop_broker ;;
    start-broker) svc_start_broker ;;
    *) echo "usage: $0 stop-broker|start-broker" >&2; exit 2 ;;
  esac
fi
