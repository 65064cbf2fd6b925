#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests and for trying sweeps before a real cluster.
#
#   scripts/slurm_cluster.sh start    install (Debian packages) if needed, configure, start; wait for idle
#   scripts/slurm_cluster.sh stop     stop slurmd, slurmctld, slurmdbd, MariaDB and munged cleanly
#   scripts/slurm_cluster.sh status   print daemon state and sinfo; exit 1 when not up
#
# Idempotent: `start` on a running cluster with an unchanged configuration only checks it. Needs root
# (package install, daemons); runs without systemd, which containers and CI machines often lack.
# Nodes and controller talk over loopback. Accounting runs through slurmdbd and a MariaDB that opens
# no TCP port, so `sacct` knows the final state of every job, including one killed from outside
# (scancel, out of memory): that is how submitit's launcher learns that such a job has ended.
set -euo pipefail

conf_dir=/etc/slurm
conf="$conf_dir/slurm.conf"
dbd_conf="$conf_dir/slurmdbd.conf"
state_dir=/var/spool/slurmctld
spool_dir=/var/spool/slurmd
log_dir=/var/log/slurm
ctld_pid=/run/slurmctld.pid
slurmd_pid=/run/slurmd.pid
dbd_pid=/run/slurmdbd.pid
munge_pid=/run/munge/munged.pid
db_dir=/var/lib/mysql
db_socket=/run/mysqld/mysqld.sock
db_pid=/run/mysqld/mysqld.pid
db_name=slurm_acct_db
cluster=rlzoo-local
account=rlzoo
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
  local missing=() policy=/usr/sbin/policy-rc.d own_policy=0
  for pkg in munge slurmctld slurmd slurm-client slurmdbd mariadb-server; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} by hand"
  log "installing ${missing[*]}"
  apt-get update -qq
  # The packages must not start their daemons: this script starts them with its own settings. A
  # policy-rc.d that exits 101 forbids service starts; one is put in place for the install if absent.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ $own_policy -eq 0 ] || rm -f "$policy"
  [ $rc -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

render_conf() {
  local mem_mb
  # RealMemory a little below what slurmd measures, else Slurm drains the node for "Low RealMemory".
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat <<EOF
# Written by scripts/slurm_cluster.sh: a single-node cluster on loopback.
ClusterName=${cluster}
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
# Accounting through slurmdbd: sacct reports every job's final state (submitit polls it).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# CPU and memory use of each job step, read from /proc every 30 s (sacct shows them).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
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

render_dbd_conf() {  # render_dbd_conf PASSWORD
  cat <<EOF
# Written by scripts/slurm_cluster.sh: job accounting of the single-node cluster.
AuthType=auth/munge
DbdHost=${node}
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=${dbd_pid}
LogFile=${log_dir}/slurmdbd.log
StorageType=accounting_storage/mysql
# "localhost" makes the client library use MariaDB's Unix socket (MariaDB opens no TCP port).
StorageHost=localhost
StorageUser=slurm
StoragePass=$1
StorageLoc=${db_name}
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

db() { mariadb --socket="$db_socket" -N -B "$@"; }  # as root, through unix_socket authentication

start_mariadb() {
  db -e "SELECT 1" >/dev/null 2>&1 && return 0
  if [ ! -d "$db_dir/mysql" ]; then
    log "creating the accounting database's data directory"
    mariadb-install-db --user=mysql --datadir="$db_dir" --skip-test-db >/dev/null 2>&1 \
      || die "mariadb-install-db failed"
  fi
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  # mariadbd stays in the foreground: start it in its own session with its output in its log, so the
  # caller's pipes close when this script ends. slurmdbd waits on lock timeouts of up to 900 s.
  setsid -f mariadbd --user=mysql --datadir="$db_dir" --socket="$db_socket" --pid-file="$db_pid" \
    --skip-networking --log-error="$log_dir/mariadb.log" --innodb-lock-wait-timeout=900 \
    </dev/null >/dev/null 2>&1
  local deadline=$((SECONDS + 60))
  until db -e "SELECT 1" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "MariaDB did not start (see $log_dir/mariadb.log)"
    sleep 0.5
  done
}

start_slurmdbd() {
  local password new
  # Keep the database password of an existing slurmdbd.conf; make one the first time.
  password="$(sed -n 's/^StoragePass=//p' "$dbd_conf" 2>/dev/null || true)"
  [ -n "$password" ] || password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  new="$(render_dbd_conf "$password")"
  if [ ! -f "$dbd_conf" ] || [ "$new" != "$(cat "$dbd_conf")" ]; then
    log "writing $dbd_conf"
    signal_pid "$dbd_pid"  # started with another configuration
    wait_gone "$dbd_pid" 30
    (umask 077 && printf '%s\n' "$new" >"$dbd_conf")  # holds the password: slurmdbd wants mode 600
  fi
  # On stdin, not the command line, where other users' `ps` would see the password.
  db <<SQL || die "cannot create the database user"
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${password}';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${password}';
GRANT ALL ON ${db_name}.* TO 'slurm'@'localhost';
SQL
  alive "$dbd_pid" || /usr/sbin/slurmdbd
  local deadline=$((SECONDS + 60))
  until sacctmgr -n list cluster >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "slurmdbd does not answer (see $log_dir/slurmdbd.log)"
    sleep 0.5
  done
}

ensure_entity() {  # ensure_entity KIND NAME [SETTINGS...]: `sacctmgr add` unless it exists
  local kind=$1 name=$2
  shift 2
  [ -n "$(sacctmgr -n -P list "$kind" "$name" format="$kind" 2>/dev/null)" ] && return 0
  sacctmgr -i add "$kind" "$name" "$@" >/dev/null || die "sacctmgr add $kind $name failed"
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
  start_mariadb
  start_slurmdbd
  ensure_entity cluster "$cluster"  # before slurmctld starts and registers with slurmdbd
  alive "$ctld_pid" || /usr/sbin/slurmctld
  alive "$slurmd_pid" || /usr/sbin/slurmd
  wait_idle
  ensure_entity account "$account" Description=rlzoo Organization=rlzoo
  ensure_entity user root Account="$account"
  log "up: $(sinfo -h -o '%P %a %D %T %c CPUs %m MB'); accounting: sacct"
}

cmd_stop() {
  stop_slurm
  signal_pid "$dbd_pid"
  wait_gone "$dbd_pid" 30
  if alive "$db_pid"; then
    mariadb-admin --socket="$db_socket" shutdown >/dev/null 2>&1 || signal_pid "$db_pid"
    wait_gone "$db_pid" 60
  fi
  signal_pid "$munge_pid"
  wait_gone "$munge_pid" 10
  log "stopped"
}

cmd_status() {
  local ok=0
  for d in munged:$munge_pid mariadbd:$db_pid slurmdbd:$dbd_pid slurmctld:$ctld_pid slurmd:$slurmd_pid; do
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
