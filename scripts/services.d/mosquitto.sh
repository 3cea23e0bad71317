#!/usr/bin/env bash
# Mosquitto 2.0 (Debian bookworm's mosquitto) as the MQTT broker the tests talk to, on loopback.
#
# Why it looks like this:
# - Its own config, persistence, log and pid file under $SVC_DIR; /etc/mosquitto and the system service
#   (which the Debian package installs but policy-rc.d keeps from starting) are never used.
# - A non-default port (18830, $DCFLEX_MQTT_PORT) on 127.0.0.1 only, so a site's broker on 1883 is never
#   reached by mistake and nothing is exposed; anonymous clients are allowed on that listener.
# - A second listener (18831, $DCFLEX_MQTT_TLS_PORT, 127.0.0.1) speaks TLS and takes only the test user
#   (dcflex-test) with its password, as a site's broker would: the gateway's TLS + credentials path is then
#   tested against the real thing. `per_listener_settings true` keeps the plain listener anonymous.
#   Every `up` makes a throwaway CA, a server certificate for 127.0.0.1/localhost signed by it and a random
#   password, all under $SVC_DIR/tls (keys and password mode 600); stop-broker/start-broker keep them.
# - Persistence is on (autosaved every 2 s and on a clean stop), so retained messages, persistent sessions
#   and their queued QoS 1/2 messages survive `stop-broker` / `start-broker`; tests use those to take the
#   broker away mid-test. Every `up` starts from an empty store.
# - Readiness is an MQTT CONNECT/CONNACK exchange over bash's /dev/tcp, not just an open port, so no
#   client package is needed and "answers" means "accepts an anonymous MQTT session". On the TLS listener
#   it is the same exchange, with the test user's credentials, through `openssl s_client` verifying the
#   server certificate against the CA for 127.0.0.1: "answers" means the whole path the tests use works.
# - It stays the user that starts it (`user` = that user): as root it would otherwise drop to the
#   `mosquitto` user, which cannot write under $SVC_DIR.
#
# Read by scripts/services.sh (see the comment at its top). SVC_DIR, SVC_NAME, ROOT are set by it.

# shellcheck disable=SC2034  # read by scripts/services.sh
SVC_PACKAGES="mosquitto openssl"  # mosquitto_passwd ships with mosquitto

MQTT_PORT=${DCFLEX_MQTT_PORT:-18830}
MQTT_TLS_PORT=${DCFLEX_MQTT_TLS_PORT:-18831}
MQTT_TLS_USER=dcflex-test
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
_mq_tls() { echo "$SVC_DIR/tls"; }  # ca.crt, server.crt/.key, password (plain, for the tests), mosquitto.passwd

svc_present() {
  local b
  for b in mosquitto mosquitto_passwd openssl; do
    _mq_which "$b" >/dev/null || { echo "mosquitto: missing $b" >&2; return 1; }
  done
}

_mq_make_tls() {  # a throwaway CA, a server certificate for 127.0.0.1/localhost and the test user's password
  local d out
  d=$(_mq_tls)
  rm -rf "$d"
  mkdir -p "$d"
  chmod 700 "$d"
  # Own minimal openssl configs, so the result does not depend on the system's openssl.cnf. The extensions
  # are what strict verifiers (Python's VERIFY_X509_STRICT, OpenSSL 3's -x509_strict) require.
  cat > "$d/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = dcflex test CA (throwaway)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
  cat > "$d/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
  # One && chain: `set -e` would be ignored here, inside an `if` condition.
  if ! out=$( (
      umask 077 &&
      openssl req -x509 -new -config "$d/ca.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.crt" -days 365 &&
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" &&
      openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
        -days 365 -extfile "$d/server.ext" -out "$d/server.crt" &&
      openssl verify -x509_strict -CAfile "$d/ca.crt" "$d/server.crt" &&
      openssl rand -hex 16 > "$d/password" &&
      mosquitto_passwd -b -c "$d/mosquitto.passwd" "$MQTT_TLS_USER" "$(cat "$d/password")"
    ) 2>&1); then
    echo "mosquitto: could not make the test CA, certificate or password file:" >&2
    echo "$out" >&2
    return 1
  fi
  chmod 644 "$d/ca.crt" "$d/server.crt"
  chmod 600 "$d/ca.key" "$d/server.key" "$d/password" "$d/mosquitto.passwd"
  rm -f "$d/server.csr"
}

_mq_write_config() {
  mkdir -p "$SVC_DIR/etc" "$SVC_DIR/data" "$SVC_DIR/log" "$SVC_DIR/run"
  cat > "$(_mq_conf)" <<EOF
# Written by scripts/services.d/mosquitto.sh on every \`services.sh up\`; edits here are lost.
# per_listener_settings: allow_anonymous and password_file below apply to the listener above them.
# The plain listener comes first (_mq_port reads the first, _mq_tls_port the second).
per_listener_settings true

listener ${MQTT_PORT} 127.0.0.1
allow_anonymous true

listener ${MQTT_TLS_PORT} 127.0.0.1
cafile $(_mq_tls)/ca.crt
certfile $(_mq_tls)/server.crt
keyfile $(_mq_tls)/server.key
require_certificate false
allow_anonymous false
password_file $(_mq_tls)/mosquitto.passwd

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

# shellcheck disable=SC2059  # the format is the escape \xNN for the byte wanted
_mq_byte() { printf "\\x$(printf %02x "$1")"; }  # _mq_byte N: the byte N (0..255)
_mq_utf8() { _mq_byte $((${#1} >> 8)); _mq_byte $((${#1} & 255)); printf %s "$1"; }  # MQTT string: length, bytes

_mq_tls_probe() {  # _mq_tls_probe PORT: the TLS listener, its certificate verified for 127.0.0.1 against our
  # CA, accepts the test user's MQTT 3.1.1 session (CONNACK code 0). CONNECT and DISCONNECT are sent at once:
  # the broker answers the first and closes on the second, which ends s_client (-quiet implies -ign_eof, so
  # the end of its input does not cut the CONNACK off). The password never appears in a command line.
  local d pass id=dcflex-svc-probe len ack
  d=$(_mq_tls)
  pass=$(cat "$d/password" 2>/dev/null) || return 1
  len=$((10 + 2 + ${#id} + 2 + ${#MQTT_TLS_USER} + 2 + ${#pass}))
  [ "$len" -lt 128 ] || return 1  # fits a one-byte "remaining length"
  ack=$(
    {
      _mq_byte 16; _mq_byte "$len"             # CONNECT
      printf '\x00\x04MQTT\x04\xc2\x00\x0a'    # MQTT 3.1.1; user name, password, clean session; keepalive 10 s
      _mq_utf8 "$id"; _mq_utf8 "$MQTT_TLS_USER"; _mq_utf8 "$pass"
      printf '\xe0\x00'                        # DISCONNECT
    } | timeout 3 openssl s_client -quiet -connect "127.0.0.1:$1" -CAfile "$d/ca.crt" \
          -verify_return_error -verify_ip 127.0.0.1 2>/dev/null | head -c 4 | od -An -tx1 | tr -d ' \n'
  )
  [ "$ack" = 20020000 ]
}

_mq_port() {  # the port in the config file (start-broker must reuse what `up` wrote, not today's env)
  awk '$1 == "listener" {print $2; exit}' "$(_mq_conf)"
}

_mq_tls_port() {  # the TLS listener's port in the config file: the second listener
  awk '$1 == "listener" && ++n == 2 {print $2; exit}' "$(_mq_conf)"
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

_mq_run() {  # start the daemon on the existing config, certificates and store; return when both listeners answer
  local port tls_port deadline started log
  port=$(_mq_port)
  tls_port=$(_mq_tls_port)
  log=$(_mq_log)
  [ -n "$tls_port" ] || { echo "mosquitto: no TLS listener in $(_mq_conf); run scripts/services.sh up" >&2; return 1; }
  _mq_port_free "$port" || return 1
  _mq_port_free "$tls_port" || return 1
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
  until _mq_tls_probe "$tls_port"; do  # both listeners are opened before the broker serves either: rarely waits
    if _mq_died "$started"; then _mq_fail "mosquitto exited"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      _mq_fail "mosquitto does not accept the test user over TLS (CA $(_mq_tls)/ca.crt) on 127.0.0.1:$tls_port after ${MQTT_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.1
  done
  echo "mosquitto: answering on 127.0.0.1:$port and, TLS + password, 127.0.0.1:$tls_port (pid $(_mq_pid || echo '?'), log $log)"
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
  _mq_make_tls || return 1
  _mq_write_config
  _mq_run
}

svc_version() {  # mosquitto -h prints "mosquitto version X" first (and exits 3)
  local bin v
  bin=$(_mq_which mosquitto) && v=$("$bin" -h 2>&1 | sed -n '1s/^mosquitto version //p') || true
  echo "mosquitto ${v:-unknown}"
}

svc_env() {
  local tls_port=""
  echo "DCFLEX_TEST_MQTT_HOST=127.0.0.1"
  if [ -f "$(_mq_conf)" ]; then
    echo "DCFLEX_TEST_MQTT_PORT=$(_mq_port)"
    tls_port=$(_mq_tls_port)
  else
    echo "DCFLEX_TEST_MQTT_PORT=$MQTT_PORT"
  fi
  echo "DCFLEX_TEST_MQTT_TLS_PORT=${tls_port:-$MQTT_TLS_PORT}"
  echo "DCFLEX_TEST_MQTT_CA=$(_mq_tls)/ca.crt"
  echo "DCFLEX_TEST_MQTT_USER=$MQTT_TLS_USER"
  echo "DCFLEX_TEST_MQTT_PASSWORD_FILE=$(_mq_tls)/password"
}

# Take the broker away and bring it back with its store (retained messages, persistent sessions and
# their queued messages) and its certificates and password, unlike `services.sh up`, which always starts
# clean. For outage tests.
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
