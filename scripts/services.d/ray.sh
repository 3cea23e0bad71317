#!/usr/bin/env bash
# Ray (PyPI ray[default], installed into the project's .venv) as a one-node head the Ray adapter's tests talk to.
#
# Why it looks like this:
# - Nothing from apt: when .venv/bin/ray is missing, svc_start installs the `ray` extra of the project
#   (pyproject.toml: ray[default,serve,train]) into .venv from the lock (uv.lock, hashes checked) with the
#   project's uv, as the Makefile does for the rest. The gateway never imports ray; only this head
#   and its jobs do (jobs run .venv/bin/python, so they can import the job-side helper, gateway.jobside).
# - Non-default ports on purpose: the dashboard (Jobs and Serve REST APIs) on 127.0.0.1:18265
#   ($DCFLEX_RAY_DASHBOARD_PORT), GCS on 16379, the Ray client server on 16380, and workers on 21000-21999.
#   Ray's default worker range (10002-19999) would cover the other test services' ports (Slurm 16817/16818,
#   VictoriaMetrics 18428, Mosquitto 18830/18831): a worker that took one first would keep it from starting.
# - Loopback only: `--node-ip-address 127.0.0.1` alone is rewritten by Ray to the host's outward address
#   (services.resolve_ip_for_localhost), and GCS, raylet and the agents then listen on every interface.
#   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 puts Ray in its single-machine mode, where the node's address is
#   127.0.0.1: everything (GCS, raylet, agents, client server, dashboard) then listens on 127.0.0.1 only.
# - Small: 4 logical CPUs (more than the machine's 2: jobs here are tiny), no GPUs, 8 of a custom resource
#   `dcflex_test_gpu` that tests request in place of GPUs, a 100 MB object store (default: 30% of RAM).
# - A short temp dir, /tmp/dcflex-ray-<hash of $SVC_DIR>: Ray puts unix sockets under it and a socket path
#   must stay under 107 bytes. Every `up` starts from an empty one (no jobs from an earlier run).
# - Stopping is scoped to this head: `ray stop` would kill every Ray on the machine (any user's, as root).
#   Every process of this head carries DCFLEX_RAY_HEAD=<temp dir> in its environment (inherited from
#   `ray start`, down to job drivers and workers), and svc_stop ends only those (TERM, then KILL after 5 s:
#   gcs_server does not exit on TERM by itself).
#
# Read by scripts/services.sh (see the comment at its top). SVC_DIR, SVC_NAME, ROOT are set by it.

# shellcheck disable=SC2034  # read by scripts/services.sh
SVC_PACKAGES=""  # from PyPI into .venv, see svc_start

RAY_DASHBOARD_PORT=${DCFLEX_RAY_DASHBOARD_PORT:-18265}
RAY_GCS_PORT=${DCFLEX_RAY_GCS_PORT:-16379}
RAY_CLIENT_PORT=${DCFLEX_RAY_CLIENT_PORT:-16380}
RAY_MIN_WORKER_PORT=${DCFLEX_RAY_MIN_WORKER_PORT:-21000}
RAY_MAX_WORKER_PORT=${DCFLEX_RAY_MAX_WORKER_PORT:-21999}
RAY_NUM_CPUS=${DCFLEX_RAY_CPUS:-4}
RAY_TEST_GPUS=${DCFLEX_RAY_TEST_GPUS:-8}
RAY_OBJECT_STORE_BYTES=${DCFLEX_RAY_OBJECT_STORE_BYTES:-100000000}
RAY_START_TIMEOUT=${DCFLEX_RAY_START_TIMEOUT:-90}
RAY_GPU_RESOURCE=dcflex_test_gpu

_ray_bin() { echo "$ROOT/.venv/bin/ray"; }
_ray_tmp() { echo "/tmp/dcflex-ray-$(printf '%s' "$SVC_DIR" | md5sum | cut -c1-12)"; }
_ray_log() { echo "$SVC_DIR/log/ray-start.log"; }
_ray_url() { echo "http://127.0.0.1:$RAY_DASHBOARD_PORT"; }

svc_present() {
  [ -x "$(_ray_bin)" ] || { echo "ray: missing $(_ray_bin)" >&2; return 1; }
  # ray[serve]'s dependencies (the Serve REST API answers 501 without them); uvicorn is one.
  [ -x "$ROOT/.venv/bin/uvicorn" ] || { echo "ray: missing ray[serve] (no $ROOT/.venv/bin/uvicorn)" >&2; return 1; }
  # ray[train]'s (ray.train refuses to import without fsspec and pyarrow); the Ray Train test needs them.
  compgen -G "$ROOT/.venv/lib/python3*/site-packages/fsspec" >/dev/null \
    && compgen -G "$ROOT/.venv/lib/python3*/site-packages/pyarrow" >/dev/null \
    || { echo "ray: missing ray[train] (no fsspec or pyarrow in $ROOT/.venv)" >&2; return 1; }
  command -v curl >/dev/null || { echo "ray: missing curl (for the readiness check)" >&2; return 1; }
}

_ray_install() {
  echo "ray: installing ray[default,serve,train] into $ROOT/.venv from uv.lock (uv sync --extra ray)"
  [ -x "$ROOT/.venv/bin/uv" ] || { echo "ray: missing $ROOT/.venv/bin/uv: run make (it sets up .venv) first" >&2; return 1; }
  # --inexact keeps what the Makefile installed; --frozen installs exactly the lock, never re-resolves.
  ( cd "$ROOT" && UV_PROJECT_ENVIRONMENT="$ROOT/.venv" UV_PYTHON_DOWNLOADS=never "$ROOT/.venv/bin/uv" sync \
      --frozen --inexact --group build --group tools --extra dev --extra ray ) >"$SVC_DIR/log/install.log" 2>&1 || {
    echo "ray: uv sync failed; see $SVC_DIR/log/install.log" >&2
    tail -n 20 "$SVC_DIR/log/install.log" >&2
    return 1
  }
}

_ray_descendants() {  # _ray_descendants PID...: all descendants of the given pids
  local p c
  for p in "$@"; do
    for c in $(pgrep -P "$p" 2>/dev/null); do
      echo "$c"
      _ray_descendants "$c"
    done
  done
}

_ray_pids() {  # pids of this head's processes: the marker in their environment, plus their descendants
  local tmp p pid found=""
  tmp=$(_ray_tmp)
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    if tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qxF "DCFLEX_RAY_HEAD=$tmp"; then
      found="$found $pid"
    fi
  done
  [ -n "$found" ] || return 0
  # shellcheck disable=SC2086,SC2046
  printf '%s\n' $found $(_ray_descendants $found) | sort -un
}

_ray_alive() {  # _ray_alive PID...: those still running (zombies are done: only their reaping is left)
  local pid st
  for pid in "$@"; do
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    st=${st##*) }  # the state follows the command name, which is in parentheses
    case "$st" in Z*) ;; *) echo "$pid" ;; esac
  done
}

svc_stop() {
  local pids left i
  pids=$(_ray_pids)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 1 50); do
    # shellcheck disable=SC2086
    left=$(_ray_alive $pids)
    [ -z "$left" ] && break
    sleep 0.1
  done
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.3
  fi
  # Workers the raylet started after the first look (a job's actors) are children of ours, now orphans: again.
  pids=$(_ray_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086,SC2046
    kill -KILL $(_ray_alive $pids) 2>/dev/null || true
  fi
  return 0
}

_ray_fail() {  # _ray_fail MESSAGE: print it with the log tails, stop what was started, fail
  local f
  echo "ray: $1; see $(_ray_log) and $(_ray_tmp)/session_latest/logs" >&2
  for f in "$(_ray_log)" "$(_ray_tmp)/session_latest/logs/dashboard.log" "$(_ray_tmp)/session_latest/logs/gcs_server.out"; do
    [ -s "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 20 "$f" >&2
  done
  svc_stop
  return 1
}

_ray_port_free() {  # _ray_port_free PORT: fail when something already listens on it
  if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; then
    echo "ray: port $1 is already in use: $(ss -ltnpH "sport = :$1")" >&2
    return 1
  fi
  return 0
}

_ray_answers() {  # _ray_answers PATH: GET <dashboard>PATH answers 2xx
  curl -sf --max-time 3 -o /dev/null "$(_ray_url)$1" 2>/dev/null
}

svc_start() {
  local tmp p deadline t0
  mkdir -p "$SVC_DIR/log"
  if ! svc_present 2>/dev/null; then _ray_install || return 1; fi
  svc_stop  # idempotent: whatever an earlier `up` left running is stopped, then started clean
  for p in "$RAY_DASHBOARD_PORT" "$RAY_GCS_PORT" "$RAY_CLIENT_PORT"; do _ray_port_free "$p" || return 1; done
  tmp=$(_ray_tmp)
  rm -rf "$tmp"
  t0=$SECONDS
  # ray start returns once its daemons are launched; they keep this environment (the marker svc_stop reads).
  if ! DCFLEX_RAY_HEAD=$tmp RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 \
      timeout "$RAY_START_TIMEOUT" "$(_ray_bin)" start --head \
      --node-ip-address 127.0.0.1 --port "$RAY_GCS_PORT" --ray-client-server-port "$RAY_CLIENT_PORT" \
      --min-worker-port "$RAY_MIN_WORKER_PORT" --max-worker-port "$RAY_MAX_WORKER_PORT" \
      --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$RAY_DASHBOARD_PORT" \
      --num-cpus "$RAY_NUM_CPUS" --num-gpus 0 --resources "{\"$RAY_GPU_RESOURCE\": $RAY_TEST_GPUS}" \
      --object-store-memory "$RAY_OBJECT_STORE_BYTES" --temp-dir "$tmp" --disable-usage-stats \
      </dev/null >"$(_ray_log)" 2>&1; then
    _ray_fail "ray start --head failed"
    return 1
  fi
  # The Jobs API module comes up a moment after /api/version: wait for both.
  deadline=$((t0 + RAY_START_TIMEOUT))
  until _ray_answers /api/version && _ray_answers /api/jobs/; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      _ray_fail "the dashboard does not answer GET $(_ray_url)/api/version and /api/jobs/ after ${RAY_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.3
  done
  echo "ray: head up in $((SECONDS - t0)) s, dashboard $(_ray_url) (GCS 127.0.0.1:$RAY_GCS_PORT, temp dir $tmp)"
}

svc_version() {  # the running head's own word (GET /api/version), else the installed package's
  local v
  v=$(curl -sf --max-time 3 "$(_ray_url)/api/version" 2>/dev/null | sed -n 's/.*"ray_version": *"\([^"]*\)".*/\1/p') || true
  [ -n "$v" ] || v=$("$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ray"))' 2>/dev/null) || true
  echo "ray ${v:-unknown}"
}

svc_env() {
  echo "DCFLEX_TEST_RAY_DASHBOARD=$(_ray_url)"
  echo "DCFLEX_TEST_RAY_ADDRESS=127.0.0.1:$RAY_GCS_PORT"
  echo "DCFLEX_TEST_RAY_GPU_RESOURCE=$RAY_GPU_RESOURCE"
}
