#!/usr/bin/env bash
# A small Slurm on this machine, for trying the harness's Slurm paths for real: one
# controller and $SLURM_LOCAL_NODES slurmd daemons (default 2), each one "node" of the
# partition, so multi-node jobs (srun over 2 nodes, torch rendezvous between them) run
# for real on one host.
#
#   scripts/slurm-local.sh install  install the Debian packages (apt-get) if missing, nothing else
#   scripts/slurm-local.sh up       install (Debian packages) if missing, configure, start, wait for idle
#   scripts/slurm-local.sh down     stop the daemons this script started, by their own pids
#   scripts/slurm-local.sh status   print sinfo, or say that nothing runs
#
# Needs root (it writes /etc/slurm/slurm.conf and starts munged, slurmctld and slurmd).
# Each node gets this machine's real CPU count and memory, so a job that asks for more
# than the machine has pends, as it would on a cluster; the nodes share those cores, so
# jobs running on both at once share them too (a test cluster, not a benchmark one).
# SLURM_LOCAL_CPUS=N gives each node N CPUs instead (more than the machine has: slurmd
# is told to take the configured count); the test suite asks for 4 on a 2-core machine,
# where its jobs mostly sleep or wait and would otherwise queue behind one another.
# The nodes are named local1, local2, ... and reached at 127.0.0.1, one slurmd port each.
# State, logs and pid files live in $SLURM_LOCAL_DIR.
# Scheduling intervals are short so a test's jobs start within a second or two, and
# finished jobs stay known to `scontrol show job` for an hour (there is no accounting
# database here, so `sacct` has nothing to say).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/harness-slurm}
NODES=${SLURM_LOCAL_NODES:-2}
case "$NODES" in ""|*[!0-9]*|0) echo "slurm-local: SLURM_LOCAL_NODES: expected an integer >= 1, got '$NODES'" >&2; exit 2 ;; esac
CPUS=${SLURM_LOCAL_CPUS:-$(nproc --all)}
case "$CPUS" in ""|*[!0-9]*|0) echo "slurm-local: SLURM_LOCAL_CPUS: expected an integer >= 1, got '$CPUS'" >&2; exit 2 ;; esac
CONF=/etc/slurm/slurm.conf
MARK="# written by harness scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }
node_names() { for i in $(seq "$NODES"); do echo "local$i"; done; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "the Slurm packages are missing and installing them needs root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
    || apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  local host cpus mem_mb overrides=""
  host=$(hostname -s)
  cpus=$CPUS
  # More CPUs than the machine has: without this slurmd's own count wins and the node drains.
  [ "$cpus" -gt "$(nproc --all)" ] && overrides="SlurmdParameters=config_overrides"
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # leave the OS a tenth
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to replace a real cluster's configuration"
  fi
  mkdir -p /etc/slurm "$DIR/ctld"
  for name in $(node_names); do mkdir -p "$DIR/d-$name"; done
  cat > "$CONF" <<CONF
$MARK
ClusterName=harness-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=30
InactiveLimit=0
MessageTimeout=10
$overrides
$(for i in $(seq "$NODES"); do
  echo "NodeName=local$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((6817 + i)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
done)
PartitionName=debug Nodes=local[1-$NODES] Default=YES MaxTime=INFINITE State=UP
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  install
  write_conf
  mkdir -p "$DIR/munge" /run/munge
  chown munge:munge /run/munge "$DIR/munge" 2>/dev/null || true
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  if ! alive "$DIR/munged.pid"; then
    runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
      || die "munged did not start (see $DIR/munge/munged.log)"
    cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
  fi
  alive "$DIR/slurmctld.pid" || slurmctld || die "slurmctld did not start (see $DIR/slurmctld.log)"
  for name in $(node_names); do
    alive "$DIR/slurmd-$name.pid" || slurmd -N "$name" || die "slurmd -N $name did not start (see $DIR/slurmd-$name.log)"
  done
  for _ in $(seq 120); do
    if [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -cx 'idle')" = "$NODES" ]; then
      sinfo
      return 0
    fi
    sleep 0.5
  done
  sinfo >&2 || true
  die "the nodes did not all become idle within 60 s (see $DIR/slurmctld.log and $DIR/slurmd-*.log)"
}

down() {
  local file pid
  # Every slurmd this script started (whatever node count it was started with), then the rest.
  for file in "$DIR"/slurmd-*.pid "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$file"
  done
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) sinfo 2>/dev/null || echo "slurm-local: no slurmctld answers" ;;
  *) die "usage: $0 install|up|down|status" ;;
esac
