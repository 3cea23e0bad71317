#!/usr/bin/env bash
# Slurm 22.05 (Debian bookworm's slurm-wlm) + its own munged, single host, on loopback.
#
# Why it looks like this:
# - Everything (config, munge key and socket, state, spool, logs, pid files) lives under $SVC_DIR so a
#   test run never touches /etc/slurm, /etc/munge or a system munged, and two checkouts do not share state.
# - Non-default ports (16817/16818) so a site's real Slurm on 6817/6818 is never reached by mistake.
# - One node, named after `hostname -s` (slurmd finds its own NodeName from it), that declares more than
#   the machine has (16 CPUs, 8 fake GPUs) through SlurmdParameters=config_overrides: the adapter sees a
#   GPU node without one being there. gres.conf points the GPUs at /dev/null.
# - proctrack/linuxproc + task/none: no cgroup plugin, so it runs inside containers (gVisor included).
# - Accounting is off (no slurmdbd), so --qos is ignored; the tests use partitions (batch, critical).
# - Every `up` starts from clean state (no jobs from an earlier run), so tests see only their own jobs.
#
# Read by scripts/services.sh (see the comment at its top). SVC_DIR, SVC_NAME, ROOT are set by it.

# shellcheck disable=SC2034  # read by scripts/services.sh
SVC_PACKAGES="slurm-wlm munge"

SLURM_CTLD_PORT=${DCFLEX_SLURM_CTLD_PORT:-16817}
SLURM_SLURMD_PORT=${DCFLEX_SLURM_SLURMD_PORT:-16818}
SLURM_START_TIMEOUT=${DCFLEX_SLURM_START_TIMEOUT:-30}
SLURM_CRED_EXPIRE=${DCFLEX_SLURM_CRED_EXPIRE:-10}
# What the one node declares. The tests expect the defaults; benchmarks/slurm_apply_bench.py starts
# Slurm with more (e.g. DCFLEX_SLURM_CPUS=512 DCFLEX_SLURM_GPUS=512) to run hundreds of 1-GPU jobs.
SLURM_NODE_CPUS=${DCFLEX_SLURM_CPUS:-16}
SLURM_NODE_GPUS=${DCFLEX_SLURM_GPUS:-8}

_slurm_which() {  # _slurm_which NAME: full path of a binary, also looking in sbin dirs not on PATH
  local d
  command -v "$1" 2>/dev/null && return 0
  for d in /usr/sbin /usr/bin /sbin /bin; do
    [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}

_slurm_node() { hostname -s; }
_slurm_conf() { echo "$SVC_DIR/etc/slurm.conf"; }

_slurm_munge_dir() {
  # A unix socket path is limited to 107 bytes; a deep checkout would overflow it, so fall back to a
  # short per-checkout directory in /tmp (named by a hash of $SVC_DIR) only in that case.
  local d="$SVC_DIR/munge"
  if [ "${#d}" -gt 80 ]; then
    d="/tmp/dcflex-munge-$(printf '%s' "$SVC_DIR" | md5sum | cut -c1-12)"
  fi
  echo "$d"
}

svc_present() {
  local b
  for b in slurmctld slurmd munged mungekey sbatch squeue sinfo scontrol scancel; do
    _slurm_which "$b" >/dev/null || { echo "slurm: missing $b" >&2; return 1; }
  done
}

_slurm_write_config() {
  local node=$1 munge_dir=$2 etc="$SVC_DIR/etc" i comm_params
  # Listen on loopback only. NoCtldInAddrAny binds slurmctld to SlurmctldHost's address (127.0.0.1).
  # NoInAddrAny binds slurmd to the address its host name resolves to, so it is set only when that is a
  # loopback address; otherwise slurmctld (which calls the node at NodeAddr=127.0.0.1) could not reach it,
  # and slurmd is left listening on all addresses.
  comm_params="CommunicationParameters=NoCtldInAddrAny"
  if getent ahostsv4 "$node" 2>/dev/null | awk '{print $1}' | grep -q '^127\.'; then
    comm_params="$comm_params,NoInAddrAny"
  fi
  mkdir -p "$etc" "$SVC_DIR/state" "$SVC_DIR/spool" "$SVC_DIR/log" "$SVC_DIR/run"
  cat > "$etc/slurm.conf" <<EOF
# Written by scripts/services.d/slurm.sh on every start; edits here are lost.
ClusterName=dcflextest
SlurmctldHost=${node}(127.0.0.1)
SlurmctldPort=${SLURM_CTLD_PORT}
SlurmdPort=${SLURM_SLURMD_PORT}
${comm_params}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s); short so requeue tests run quickly.
AuthInfo=socket=${munge_dir}/munge.socket,cred_expire=${SLURM_CRED_EXPIRE}
StateSaveLocation=${SVC_DIR}/state
SlurmdSpoolDir=${SVC_DIR}/spool
SlurmctldPidFile=${SVC_DIR}/run/slurmctld.pid
SlurmdPidFile=${SVC_DIR}/run/slurmd.pid
SlurmctldLogFile=${SVC_DIR}/log/slurmctld.log
SlurmdLogFile=${SVC_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=${etc}/plugstack.conf
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# Frequent passes (defaults: 60 s main, 30 s backfill) so a job that becomes eligible starts in seconds.
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
PreemptType=preempt/none
GresTypes=gpu
JobRequeue=1
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${node} NodeAddr=127.0.0.1 NodeHostname=${node} CPUs=${SLURM_NODE_CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${SLURM_NODE_CPUS} ThreadsPerCore=1 RealMemory=16000 Gres=gpu:${SLURM_NODE_GPUS} State=UNKNOWN
PartitionName=batch Nodes=${node} Default=YES MaxTime=INFINITE State=UP
PartitionName=critical Nodes=${node} Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
  # Fake GPUs. slurmd 22.05 drops a GPU without File= ("Removing file-less GPU") and rejects a File=
  # that is not a device, so each is a symlink to /dev/null; jobs then get CUDA_VISIBLE_DEVICES as usual.
  rm -rf "$SVC_DIR/dev"
  mkdir -p "$SVC_DIR/dev"
  for ((i = 0; i < SLURM_NODE_GPUS; i++)); do ln -sfn /dev/null "$SVC_DIR/dev/gpu$i"; done
  cat > "$etc/gres.conf" <<EOF
AutoDetect=off
NodeName=${node} Name=gpu File=${SVC_DIR}/dev/gpu[0-$((SLURM_NODE_GPUS - 1))]
EOF
  : > "$etc/plugstack.conf"  # empty: do not pick up /etc/slurm/plugstack.conf.d
}

_slurm_pid_alive() {  # _slurm_pid_alive PIDFILE: prints the pid and succeeds when that process runs
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

_slurm_kill_pidfiles() {  # _slurm_kill_pidfiles PIDFILE...: TERM them all, wait up to 10 s, then KILL
  local f pid pids="" left i
  for f in "$@"; do
    pid=$(_slurm_pid_alive "$f") && pids="$pids $pid"
  done
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 100); do
      left=""
      for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left $pid"; done
      [ -z "$left" ] && break
      sleep 0.1
    done
    if [ -n "$left" ]; then
      echo "slurm: pids$left did not exit on TERM; killing" >&2
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$@"
}

_slurm_our_stepds() {  # pids of slurmstepd processes started by our slurmd (they inherit SLURM_CONF)
  local p conf
  conf=$(_slurm_conf)
  for p in $(pgrep -x slurmstepd 2>/dev/null); do
    if tr '\0' '\n' 2>/dev/null < "/proc/$p/environ" | grep -qxF "SLURM_CONF=$conf"; then
      echo "$p"
    fi
  done
}

_slurm_descendants() {  # _slurm_descendants PID...: all descendants of the given pids
  local p c
  for p in "$@"; do
    for c in $(pgrep -P "$p" 2>/dev/null); do
      echo "$c"
      _slurm_descendants "$c"
    done
  done
}

svc_stop() {
  local conf run="$SVC_DIR/run" munge_dir i stepds procs
  conf=$(_slurm_conf)
  munge_dir=$(_slurm_munge_dir)
  # Cancel jobs while the controller still runs, so their steps end cleanly (suspended ones included).
  if _slurm_pid_alive "$run/slurmctld.pid" >/dev/null && [ -f "$conf" ]; then
    SLURM_CONF=$conf timeout 10 scancel --user=root --full 2>/dev/null || true
    for i in $(seq 1 50); do
      [ -z "$(_slurm_our_stepds)" ] && break
      sleep 0.2
    done
  fi
  _slurm_kill_pidfiles "$run/slurmd.pid" "$run/slurmctld.pid"
  # Steps that outlived their jobs (e.g. slurmctld was already gone): end them and what they run.
  stepds=$(_slurm_our_stepds)
  if [ -n "$stepds" ]; then
    # shellcheck disable=SC2086
    procs="$stepds $(_slurm_descendants $stepds)"
    # shellcheck disable=SC2086
    echo "slurm: killing leftover job steps:" $procs >&2
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
  fi
  _slurm_kill_pidfiles "$munge_dir/munged.pid"
  rm -f "$munge_dir/munge.socket" "$munge_dir/munge.socket.lock"
}

_slurm_fail() {  # _slurm_fail MESSAGE: print it with the log tails, stop what was started, fail
  local f
  echo "slurm: $1" >&2
  for f in "$(_slurm_munge_dir)/munged.log" "$SVC_DIR/log/slurmctld.log" "$SVC_DIR/log/slurmd.log" \
           "$SVC_DIR/log/slurmctld.out" "$SVC_DIR/log/slurmd.out"; do
    [ -s "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 25 "$f" >&2
  done
  svc_stop
  return 1
}

_slurm_port_free() {  # _slurm_port_free PORT: fail when something already listens on it
  if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; then
    return 1
  fi
  return 0
}

_slurm_start_munged() {
  local munge_dir=$1 munged mungekey i
  munged=$(_slurm_which munged)
  mungekey=$(_slurm_which mungekey)
  # munged refuses directories that others can write, and key files that others can read; the socket's
  # directory must be searchable by all or munged warns that other users cannot reach it.
  mkdir -p "$munge_dir"
  chmod 0755 "$munge_dir"
  if [ ! -s "$munge_dir/munge.key" ]; then
    "$mungekey" --create --keyfile="$munge_dir/munge.key" >/dev/null
  fi
  chmod 0600 "$munge_dir/munge.key"
  : > "$munge_dir/munged.log"
  # --force: a socket left by a killed munged is stale, take it over.
  if ! "$munged" --force --socket="$munge_dir/munge.socket" --key-file="$munge_dir/munge.key" \
      --pid-file="$munge_dir/munged.pid" --log-file="$munge_dir/munged.log" \
      --seed-file="$munge_dir/munged.seed" --num-threads=2 </dev/null >>"$munge_dir/munged.log" 2>&1; then
    _slurm_fail "munged did not start"
    return 1
  fi
  for i in $(seq 1 50); do
    [ -S "$munge_dir/munge.socket" ] && _slurm_pid_alive "$munge_dir/munged.pid" >/dev/null && return 0
    sleep 0.1
  done
  _slurm_fail "munged socket $munge_dir/munge.socket did not appear"
}

_slurm_died() {  # _slurm_died PIDFILE SINCE: the daemon is gone (its pid file names a dead process, or
  # none appeared within 5 s of SINCE): a daemonized slurmctld/slurmd that hits a fatal config error exits
  # after its parent returned 0, so this is what tells a dead daemon from a slow one.
  local pid
  if [ -s "$1" ]; then
    pid=$(cat "$1" 2>/dev/null || true)
    [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null
    return
  fi
  [ $((SECONDS - $2)) -ge 5 ]
}

svc_start() {
  local node conf munge_dir bindir deadline state p started run="$SVC_DIR/run"
  node=$(_slurm_node)
  conf=$(_slurm_conf)
  munge_dir=$(_slurm_munge_dir)
  bindir=$(dirname "$(_slurm_which sbatch)")
  export SLURM_CONF=$conf
  export PATH="$bindir:/usr/sbin:$PATH"

  svc_stop  # idempotent: whatever an earlier `up` left running is stopped, then started clean
  for p in "$SLURM_CTLD_PORT" "$SLURM_SLURMD_PORT"; do
    _slurm_port_free "$p" || { echo "slurm: port $p is already in use: $(ss -ltnpH "sport = :$p")" >&2; return 1; }
  done
  rm -rf "$SVC_DIR/state" "$SVC_DIR/spool" "$SVC_DIR/log"
  _slurm_write_config "$node" "$munge_dir"
  _slurm_start_munged "$munge_dir" || return 1

  # Both daemonize; their stdio goes to files so nothing holds the caller's pipes open.
  if ! "$(_slurm_which slurmctld)" -f "$conf" -c </dev/null >"$SVC_DIR/log/slurmctld.out" 2>&1; then
    _slurm_fail "slurmctld did not start"
    return 1
  fi
  deadline=$((SECONDS + SLURM_START_TIMEOUT))
  started=$SECONDS
  until timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; do
    if _slurm_died "$run/slurmctld.pid" "$started"; then _slurm_fail "slurmctld exited"; return 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then _slurm_fail "slurmctld does not answer scontrol ping"; return 1; fi
    sleep 0.3
  done
  if ! "$(_slurm_which slurmd)" -f "$conf" -N "$node" </dev/null >"$SVC_DIR/log/slurmd.out" 2>&1; then
    _slurm_fail "slurmd did not start"
    return 1
  fi
  started=$SECONDS
  while :; do
    if _slurm_died "$run/slurmd.pid" "$started"; then _slurm_fail "slurmd exited"; return 1; fi
    state=$(timeout 5 sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
      idle) break ;;
      inval) _slurm_fail "node $node is INVAL: slurmd's report contradicts slurm.conf (see slurmctld.log)"; return 1 ;;
      down|drained|draining|drain|fail) timeout 5 scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      _slurm_fail "node $node is '${state:-unknown}', not idle, after ${SLURM_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.3
  done
  echo "slurm: node $node idle (controller 127.0.0.1:$SLURM_CTLD_PORT, conf $conf)"
}

svc_version() {  # slurmctld -V prints "slurm-wlm X" (Debian) or "slurm X"
  local bin v
  bin=$(_slurm_which slurmctld) && v=$("$bin" -V 2>&1 | head -n1) || true
  echo "slurm ${v:-unknown}"
}

svc_env() {
  echo "SLURM_CONF=$(_slurm_conf)"
  echo "DCFLEX_SLURM_NODE=$(_slurm_node)"
  echo "DCFLEX_SLURM_BIN=$(dirname "$(_slurm_which sbatch || echo /usr/bin/sbatch)")"
}

# Restart only slurmctld, keeping its saved state: jobs (running, suspended, held) and DOWN/DRAIN node
# states with their reasons survive, unlike `services.sh up`, which always starts clean. munged and slurmd
# keep running. The adapter's tests stop the controller on purpose and bring it back with this.
svc_restart_ctld() {
  local conf bindir run="$SVC_DIR/run" deadline started
  conf=$(_slurm_conf)
  if [ ! -f "$conf" ]; then echo "slurm: no $conf; run scripts/services.sh up first" >&2; return 1; fi
  if ! _slurm_pid_alive "$(_slurm_munge_dir)/munged.pid" >/dev/null; then
    echo "slurm: munged is not running; run scripts/services.sh up (it starts clean)" >&2
    return 1
  fi
  bindir=$(dirname "$(_slurm_which sbatch)")
  export SLURM_CONF=$conf
  export PATH="$bindir:/usr/sbin:$PATH"
  _slurm_kill_pidfiles "$run/slurmctld.pid"
  # Without -c, slurmctld recovers its state from StateSaveLocation.
  if ! "$(_slurm_which slurmctld)" -f "$conf" </dev/null >>"$SVC_DIR/log/slurmctld.out" 2>&1; then
    echo "slurm: slurmctld did not start; see $SVC_DIR/log/slurmctld.log" >&2
    return 1
  fi
  deadline=$((SECONDS + SLURM_START_TIMEOUT))
  started=$SECONDS
  until timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; do
    if _slurm_died "$run/slurmctld.pid" "$started" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "slurm: slurmctld is not up after a restart; tail of $SVC_DIR/log/slurmctld.log:" >&2
      tail -n 20 "$SVC_DIR/log/slurmctld.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
  echo "slurm: slurmctld restarted with its saved state (controller 127.0.0.1:$SLURM_CTLD_PORT)"
}

# Run directly (services.sh sources this file instead) for maintenance of a running test Slurm:
#   scripts/services.d/slurm.sh restart-ctld    restart only slurmctld, keeping jobs and node drains
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ROOT=$(cd "$(dirname "$0")/../.." && pwd)
  SVC_NAME=slurm
  SVC_DIR="$ROOT/var/services/$SVC_NAME"
  case "${1:-}" in
    restart-ctld) svc_restart_ctld ;;
    *) echo "usage: $0 restart-ctld" >&2; exit 2 ;;
  esac
fi
