#!/bin/bash
# A real single-node SLURM cluster (slurmctld + slurmd + munge) for the slurm backend's tests,
# started as root without systemd, with 4 fake GPUs (gres files that are symlinks to /dev/null,
# so jobs get CUDA_VISIBLE_DEVICES).  Every file lives under $SPOOLER_SLURM_BASE.  Where
# slurmdbd and MariaDB are installed, accounting is on (sacct works), with a fresh database at
# each `up`; elsewhere it is off, as on many clusters.
#
#   tests/slurm/cluster.sh install   Debian packages (slurmctld slurmd slurm-client munge,
#                                    slurmdbd mariadb-server)
#   tests/slurm/cluster.sh up        write the config, start the daemons, wait for an idle node
#   tests/slurm/cluster.sh down      cancel every job, stop the daemons
#   tests/slurm/cluster.sh status
#
# Clients need SLURM_CONF=$SPOOLER_SLURM_BASE/etc/slurm.conf (the tests find it there).
set -euo pipefail
BASE=${SPOOLER_SLURM_BASE:-/tmp/spooler-slurm}
CPUS=${SPOOLER_SLURM_CPUS:-8}   # more than the machine has: SlurmdParameters=config_overrides
export SLURM_CONF=$BASE/etc/slurm.conf

say() { echo "[slurm $(date +%T)] $*" >&2; }

install_packages() {
  apt-get update -qq
  # Without systemd the packages' scripts start nothing, which is what we want.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server
}

accounting() { [ -x /usr/sbin/slurmdbd ] && [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null; }

write_config() {
  mkdir -p "$BASE"/{etc,state,spool,log,run,fakedev}
  for i in 0 1 2 3; do ln -sfn /dev/null "$BASE/fakedev/nvidia$i"; done
  # batch_sched_delay=0 and sched_min_interval=0: a job starts within about a second, not three.
  cat >"$BASE/etc/slurm.conf" <<EOF
ClusterName=spooler
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$(if accounting; then
  printf '%s\n' AccountingStorageType=accounting_storage/slurmdbd AccountingStorageHost=localhost \
    AccountingStoragePort=6819 AccountingStorageTRES=gres/gpu
else
  echo AccountingStorageType=accounting_storage/none
fi)
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
NodeName=localhost CPUs=$CPUS Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  # File= is required: 22.05 drops file-less GPUs and then drains the node.
  cat >"$BASE/etc/gres.conf" <<EOF
AutoDetect=off
Name=gpu File=$BASE/fakedev/nvidia[0-3]
EOF
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
  local what=$2 end=$(($(date +%s) + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then
      say "gave up waiting for $what"; tail -n 30 "$BASE"/log/*.log >&2 || true; return 1
    fi
    sleep 0.1
  done
}

node_idle() { [ "$(sinfo -h -N -o %T)" = idle ]; }

start_munge() {
  [ -s /etc/munge/munge.key ] || {
    mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  }
  install -d -o munge -g munge -m 0755 /run/munge
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi  # one is running already
  # munged refuses root unless the key is root's: run it as munge (setpriv execs, so $! is munged).
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F >"$BASE/log/munged.out" 2>&1 &
  echo $! >"$BASE/run/munged.fg.pid"
  wait_until 10 munged bash -c 'munge -n | unmunge'
}

start_accounting() {  # MariaDB for slurmdbd, then slurmdbd: a fresh database each time
  stop slurmdbd mariadbd  # left by an earlier up whose slurmctld is gone
  rm -rf "$BASE/mysql"
  mariadb-install-db --no-defaults --datadir="$BASE/mysql" --user=root \
    --auth-root-authentication-method=normal --skip-test-db >"$BASE/log/mariadb-install.out" 2>&1
  /usr/sbin/mariadbd --no-defaults --datadir="$BASE/mysql" --user=root --socket="$BASE/run/mysql.sock" \
    --port=3307 --bind-address=127.0.0.1 --pid-file="$BASE/run/mariadbd.pid" \
    --log-error="$BASE/log/mariadb.err" >"$BASE/log/mariadbd.out" 2>&1 &
  echo $! >"$BASE/run/mariadbd.fg.pid"
  wait_until 30 mariadbd mariadb --no-defaults -S "$BASE/run/mysql.sock" -uroot -e 'select 1'
  mariadb --no-defaults -S "$BASE/run/mysql.sock" -uroot -e "CREATE USER IF NOT EXISTS \
    'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  printf '%s\n' AuthType=auth/munge DbdHost=localhost DbdPort=6819 SlurmUser=root \
    "LogFile=$BASE/log/slurmdbd.log" "PidFile=$BASE/run/slurmdbd.pid" \
    StorageType=accounting_storage/mysql StorageHost=127.0.0.1 StoragePort=3307 \
    StorageUser=slurm StoragePass=slurmpw StorageLoc=slurm_acct_db >"$BASE/etc/slurmdbd.conf"
  chmod 600 "$BASE/etc/slurmdbd.conf"  # slurmdbd refuses a config others may read
  /usr/sbin/slurmdbd -D >"$BASE/log/slurmdbd.out" 2>&1 &
  echo $! >"$BASE/run/slurmdbd.fg.pid"
  wait_until 30 slurmdbd bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
}

start_slurmctld() {
  # -c: a cold start, so no drained node state survives from an earlier run.
  /usr/sbin/slurmctld -D -c >"$BASE/log/slurmctld.out" 2>&1 &
  echo $! >"$BASE/run/slurmctld.fg.pid"
  wait_until 30 slurmctld scontrol ping
}

up() {
  if [ -f "$BASE/run/slurmctld.fg.pid" ] && scontrol ping >/dev/null 2>&1; then
    say "already up"; return
  fi
  rm -rf "$BASE/state" "$BASE/spool"
  write_config
  start_munge
  if accounting; then start_accounting; fi
  start_slurmctld
  /usr/sbin/slurmd -D -N localhost >"$BASE/log/slurmd.out" 2>&1 &
  echo $! >"$BASE/run/slurmd.fg.pid"
  wait_until 30 "an idle node" node_idle
  say "up: SLURM_CONF=$SLURM_CONF"
}

alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop() {  # stop DAEMON...: SIGTERM, up to 10 s, then SIGKILL (a zombie counts as gone)
  local d p pids=()
  for d in "$@"; do
    [ -f "$BASE/run/$d.fg.pid" ] || continue
    p=$(cat "$BASE/run/$d.fg.pid"); rm -f "$BASE/run/$d.fg.pid"
    kill -TERM "$p" 2>/dev/null && pids+=("$p")
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then say "pid $p ignored SIGTERM"; kill -KILL "$p"; fi
    wait "$p" 2>/dev/null || true
  done
}

down() {
  if scontrol ping >/dev/null 2>&1; then  # a job's slurmstepd outlives slurmd: cancel jobs first
    scancel --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i -t PD,R,CG,S 2>/dev/null)" ] && break; sleep 0.1; done
  fi
  stop slurmd slurmctld
  stop slurmdbd mariadbd
  stop munged
  say down
}

case "${1:-}" in
  install) install_packages ;;
  up) up ;;
  down) down ;;
  # Stop or start the controller alone (tests of a controller that does not answer).
  stop-controller) stop slurmctld ;;
  start-controller) /usr/sbin/slurmctld -D >"$BASE/log/slurmctld.out" 2>&1 & echo $! >"$BASE/run/slurmctld.fg.pid"
    wait_until 30 slurmctld scontrol ping ;;
  status) scontrol ping; sinfo -N -o '%N %T %C %G'; squeue
    if accounting; then sacctmgr -n -P list cluster format=cluster; else echo "accounting: off"; fi ;;
  *) echo "usage: $0 install|up|down|status|stop-controller|start-controller" >&2; exit 2 ;;
esac
