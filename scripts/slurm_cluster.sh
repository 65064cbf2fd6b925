#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests and for trying sweeps before a real cluster.
#
#   scripts/slurm_cluster.sh start    install (Debian packages) if needed, configure, start; wait for idle
#   scripts/slurm_cluster.sh stop     stop slurmd, slurmctld and munged cleanly
#   scripts/slurm_cluster.sh status   print daemon state and sinfo; exit 1 when not up
#
# Idempotent: `start` on a running cluster with an unchanged configuration only checks it. Needs root
# (package install, daemons); runs without systemd, which containers and CI machines often lack.
# Nodes and controller talk over loopback. Accounting (slurmdbd) is not set up: `sacct` is unavailable.
set -euo pipefail

conf_dir=/etc/slurm
conf="$conf_dir/slurm.conf"
state_dir=/var/spool/slurmctld
spool_dir=/var/spool/slurmd
log_dir=/var/log/slurm
ctld_pid=/run/slurmctld.pid
slurmd_pid=/run/slurmd.pid
munge_pid=/run/munge/munged.pid
node="$(hostname -s)"

log() { printf '[slurm_cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts system daemons)"

alive() {  # alive PIDFILE: the process named in PIDFILE is running
  local pid
  pid="$(cat "$1" 2>/dev/null)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

signal_pid() {  # signal_pid PIDFILE: SIGTERM the process named in PIDFILE, if it still runs
  local pid
  pid="$(cat "$1" 2>/dev/null)" && [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
}

wait_gone() {  # wait_gone PIDFILE SECONDS
  local pid deadline=$((SECONDS + $2))
  pid="$(cat "$1" 2>/dev/null)" || return 0  # daemons remove their pid file as they exit
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "pid $pid did not exit in $2 s"; return 1; }
    sleep 0.2
  done
  rm -f "$1"
}

install_packages() {
  local missing=()
  for pkg in munge slurmctld slurmd slurm-client; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
  log "installing ${missing[*]}"
  apt-get update -qq
  # policy-rc.d denies service starts where there is no init system; this script starts the daemons.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

render_conf() {
  local mem_mb
  # RealMemory a little below what slurmd measures, else Slurm drains the node for "Low RealMemory".
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat <<EOF
# Written by scripts/slurm_cluster.sh: a single-node cluster on loopback.
ClusterName=rlzoo-local
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${state_dir}
SlurmdSpoolDir=${spool_dir}
SlurmctldPidFile=${ctld_pid}
SlurmdPidFile=${slurmd_pid}
SlurmctldLogFile=${log_dir}/slurmctld.log
SlurmdLogFile=${log_dir}/slurmd.log
# No cgroups: they are often unavailable in containers; processes are tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# CPUs and memory are the consumable resources, so two 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
# A restarted node returns to service by itself.
ReturnToService=2
# Let submitit's preemption/timeout handler requeue jobs.
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
NodeName=${node} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  alive "$munge_pid" && return 0
  [ -s /etc/munge/munge.key ] || { log "creating munge key"; mungekey --create --force >/dev/null 2>&1 || \
    (dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none); }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  local deadline=$((SECONDS + 10))
  until munge -n </dev/null | unmunge >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "munged did not start (see /var/log/munge/munged.log)"
    sleep 0.2
  done
}

stop_slurm() {
  if alive "$ctld_pid"; then
    # Stops slurmctld and every slurmd; running jobs are kept in the state dir.
    scontrol shutdown >/dev/null 2>&1 || signal_pid "$ctld_pid"
  fi
  signal_pid "$slurmd_pid"
  wait_gone "$ctld_pid" 30
  wait_gone "$slurmd_pid" 30
}

wait_idle() {
  local deadline=$((SECONDS + 60)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state="$(sinfo -h -n "$node" -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
      idle|mixed|allocated|completing) return 0 ;;
      drain*|down*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $node not ready (state '${state:-none}'); see ${log_dir}/slurmctld.log and slurmd.log"
}

cmd_start() {
  install_packages
  install -d -m 0755 "$conf_dir" "$state_dir" "$spool_dir" "$log_dir"
  local new
  new="$(render_conf)"
  if [ ! -f "$conf" ] || [ "$new" != "$(cat "$conf")" ]; then
    log "writing $conf"
    stop_slurm  # daemons started with another configuration
    printf '%s\n' "$new" >"$conf"
  fi
  start_munge
  alive "$ctld_pid" || /usr/sbin/slurmctld
  alive "$slurmd_pid" || /usr/sbin/slurmd
  wait_idle
  log "up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB')"
}

cmd_stop() {
  stop_slurm
  signal_pid "$munge_pid"
  wait_gone "$munge_pid" 10
  log "stopped"
}

cmd_status() {
  local ok=0
  for d in munged:$munge_pid slurmctld:$ctld_pid slurmd:$slurmd_pid; do
    if alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: stopped"; ok=1; fi
  done
  [ $ok -eq 0 ] && sinfo
  return $ok
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
