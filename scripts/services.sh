#!/usr/bin/env bash
# Installs (from Debian packages, when missing) and starts the real services the test suite talks to,
# each on loopback, on its own port, with its own config and state under var/services/<name>.
#
#   scripts/services.sh up      install what is missing, start everything, wait until each answers
#   scripts/services.sh down    stop everything that `up` started
#   scripts/services.sh env     print the environment the tests read (ports, paths)
#
# A service is one file scripts/services.d/<name>.sh defining:
#   SVC_PACKAGES="deb-package ..."      installed with apt-get when `svc_present` fails
#   svc_present  -> 0 when the binaries are there
#   svc_start    -> start it in the background (state under $SVC_DIR), return when it answers
#   svc_stop     -> stop it (idempotent)
#   svc_env      -> print KEY=VALUE lines the tests read
#   svc_version  -> (optional) print "name version" of what svc_start started; the test session's header shows it
# Adding a service means adding a file; nothing here changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/var/services"
mkdir -p "$state"
apt_updated=0

each_service() {
  local f
  for f in "$root"/scripts/services.d/*.sh; do
    [ -e "$f" ] || continue
    "$@" "$f"
  done
}

run_in() {  # run_in FILE FUNCTION: source the service file in a subshell and call one of its functions
  local file=$1 fn=$2 name
  name=$(basename "$file" .sh)
  ( SVC_NAME=$name SVC_DIR="$state/$name" ROOT="$root"; mkdir -p "$SVC_DIR"; source "$file"; "$fn" )
}

install_one() {
  local file=$1 pkgs
  if ! run_in "$file" svc_present >/dev/null 2>&1; then
    pkgs=$( ( source "$file"; echo "${SVC_PACKAGES:-}" ) )
    [ -n "$pkgs" ] || return 0  # installs itself (e.g. from PyPI into the venv) when it starts
    if [ "$apt_updated" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    echo "services: installing $pkgs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  fi
}

start_one() { echo "services: starting $(basename "$1" .sh)"; run_in "$1" svc_start; }
stop_one() { run_in "$1" svc_stop || true; }
env_one() { run_in "$1" svc_env; }
version_one() { ( source "$1"; declare -F svc_version >/dev/null ) && run_in "$1" svc_version || true; }

case "${1:-}" in
  up)   each_service install_one; each_service start_one; each_service env_one > "$state/env"
        each_service version_one > "$state/versions"; sed 's/^/services: version /' "$state/versions" ;;
  down) each_service stop_one ;;
  env)  each_service env_one ;;
  versions) each_service version_one ;;
  *)    echo "usage: $0 up|down|env|versions" >&2; exit 2 ;;
esac
