#!/usr/bin/env bash
# Single-node SLURM on 127.0.0.1 for testing the slurm profile: munge, MariaDB, slurmdbd,
# slurmctld and slurmd, all with their state, sockets, logs and pid files in one folder.
#
#   tools/slurm_local.sh start    # start everything (idempotent: a running cluster is kept)
#   tools/slurm_local.sh status   # which daemons run; exit 0 only if all do
#   tools/slurm_local.sh stop     # stop ONLY the daemons this script started (by pid file)
#   tools/slurm_local.sh env      # print the export line the slurm commands need
#
# After start, point the slurm commands at the cluster with
#   export SLURM_CONF=$NEURAL_EM_SLURM_DIR/etc/slurm.conf
#
# Environment (all optional):
#   NEURAL_EM_SLURM_DIR        state folder          [/tmp/neural-em-slurm]
#   NEURAL_EM_SLURM_PORT_BASE  first of 4 TCP ports  [16817]  (slurmctld, slurmd, slurmdbd, mariadb)
#   NEURAL_EM_SLURM_GPUS       number of fake GPUs   [2]
#   NEURAL_EM_SLURM_CPUS       CPUs the node offers  [max(nproc, 4)]
#   NEURAL_EM_SLURM_ACCOUNT    account created       [neuralem]
#   NEURAL_EM_SLURM_CLUSTER    cluster name          [neuralem]
#
# Needs root and Debian's slurm-wlm, slurmdbd, mariadb-server and munge packages
# (tools/install_system_deps.sh). Nothing is installed, enabled or started system-wide (no
# systemd, no init scripts); everything lives in the state folder, except the one link below.
#
# The default config path: Snakemake's slurm jobstep plugin strips every SLURM_* variable
# (SLURM_CONF included) before the `srun` it runs inside each job, so that srun reads the
# default /etc/slurm/slurm.conf. Where that file does not exist, start links it to this
# cluster's config and stop removes the link again (only a link that points here). Where a
# real config is there, it is left alone and a warning says jobs' srun will read it. Set
# NEURAL_EM_SLURM_LINK_ETC=0 to never touch /etc/slurm.
#
# Fake GPUs: gres.conf entries whose File= are symlinks to /dev/null named like GPU devices
# (slurm takes the device number from the name), so jobs asking for --gres=gpu:1 or --gpus=1
# get CUDA_VISIBLE_DEVICES set. Entries without File= or pointing at plain files do not.
set -euo pipefail

STATE=${NEURAL_EM_SLURM_DIR:-/tmp/neural-em-slurm}
PORT_BASE=${NEURAL_EM_SLURM_PORT_BASE:-16817}
N_GPUS=${NEURAL_EM_SLURM_GPUS:-2}
ACCOUNT=${NEURAL_EM_SLURM_ACCOUNT:-neuralem}
CLUSTER=${NEURAL_EM_SLURM_CLUSTER:-neuralem}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
START_TIMEOUT_S=${NEURAL_EM_SLURM_START_TIMEOUT_S:-60}

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
MUNGE_SOCKET=$RUN/munge.socket
DB_SOCKET=$RUN/mysqld.sock
export SLURM_CONF=$ETC/slurm.conf

# name -> pid file; the order is the start order (stop goes backwards)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
pidfile() { echo "$RUN/$1.pid"; }

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# pid of a daemon we started, if it still runs; empty otherwise. The pid file alone is not
# trusted (pids get reused): the process must be the expected binary AND name this state folder
# in its command line or environment (every daemon here gets one or the other).
our_pid() {
    local name=$1 file pid exe
    file=$(pidfile "$name")
    [[ -s $file ]] || return 0
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -d /proc/$pid ]] || return 0
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case "$(basename "${exe% (deleted)}")" in
        "$name" | "$name"-wlm | mysqld) ;;
        *) return 0 ;;
    esac
    if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE" \
        || tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qF "$STATE"; then
        echo "$pid"
    fi
}

running() { [[ -n $(our_pid "$1") ]]; }

wait_for() {  # wait_for DESCRIPTION COMMAND...  (polls until COMMAND succeeds)
    local what=$1 deadline=$((SECONDS + START_TIMEOUT_S))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            say "timed out after ${START_TIMEOUT_S}s waiting for $what; last log lines:"
            tail -n 20 "$LOG"/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.3
    done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_tools() {
    local missing=()
    for tool in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd \
        sacctmgr sinfo sbatch sacct; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]} (install with tools/install_system_deps.sh)"
    fi
    [[ $(id -u) == 0 ]] || die "must run as root (the daemons run as root in this test setup)"
}

write_configs() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=${NEURAL_EM_SLURM_CPUS:-$(($(nproc) > 4 ? $(nproc) : 4))}
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 / 2}' /proc/meminfo)
    mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/slurmd" "$STATE/gpus" "$STATE/munge"
    chmod 700 "$STATE/munge"

    for ((i = 0; i < N_GPUS; i++)); do
        ln -sfn /dev/null "$STATE/gpus/nvidia$i"
    done

    cat >"$ETC/slurm.conf" <<EOF
# written by tools/slurm_local.sh: single-node test cluster on 127.0.0.1
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd connections the munge socket is taken from here, not from AuthInfo
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
# keep sbatch --comment (the plugin writes the rule name there) in sacct
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$N_GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    : >"$ETC/gres.conf"
    for ((i = 0; i < N_GPUS; i++)); do
        echo "NodeName=$host Name=gpu File=$STATE/gpus/nvidia$i" >>"$ETC/gres.conf"
    done

    # slurmdbd refuses a config readable by others
    (
        umask 077
        cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=neuralem-test
StorageLoc=slurm_acct_db
EOF
    )
}

start_munge() {
    running munged && return 0
    [[ -s $STATE/munge/munge.key ]] || mungekey --create --keyfile="$STATE/munge/munge.key" 2>/dev/null \
        || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE/munge/munge.key"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
        --pid-file="$(pidfile munged)" --log-file="$LOG/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    wait_for "munged" running munged
}

start_mariadb() {
    running mariadbd && return 0
    port_free "$DB_PORT" || die "port $DB_PORT (MariaDB) is taken; set NEURAL_EM_SLURM_PORT_BASE"
    local fresh=0
    if [[ ! -d $STATE/mysql/mysql ]]; then
        fresh=1
        mkdir -p "$STATE/mysql"
        mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" \
            --auth-root-authentication-method=socket --innodb-log-file-size=8M \
            >"$LOG/mariadb-install.log" 2>&1 \
            || { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    # --no-defaults: ignore /etc/mysql so a system MariaDB's settings never leak in;
    # setsid: its own session, so a signal to the caller's process group never reaches it
    setsid nohup mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$DB_SOCKET" \
        --pid-file="$(pidfile mariadbd)" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$LOG/mariadb.log" --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=8M --skip-name-resolve >/dev/null 2>&1 &
    wait_for "MariaDB" mariadb --no-defaults --socket="$DB_SOCKET" -uroot -e "SELECT 1"
    if ((fresh)); then
        mariadb --no-defaults --socket="$DB_SOCKET" -uroot <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'neuralem-test';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    fi
}

start_slurmdbd() {
    running slurmdbd && return 0
    port_free "$DBD_PORT" || die "port $DBD_PORT (slurmdbd) is taken; set NEURAL_EM_SLURM_PORT_BASE"
    # slurmdbd has no -f: it reads slurmdbd.conf beside $SLURM_CONF
    slurmdbd
    wait_for "slurmdbd" sacctmgr -n list cluster
}

# sacctmgr asks y/N questions on some queries; never let it read a terminal
sacctmgr() { command sacctmgr "$@" </dev/null; }

setup_accounts() {
    local user
    user=$(id -un)
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P list account "$ACCOUNT" format=account) ]]; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
            description="neural-em test account" organization=neuralem >/dev/null
    fi
    if [[ -z $(sacctmgr -n -P list assoc where cluster="$CLUSTER" account="$ACCOUNT" \
        user="$user" format=user) ]]; then
        sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" \
            defaultaccount="$ACCOUNT" >/dev/null
    fi
}

DEFAULT_CONF=/etc/slurm/slurm.conf

link_default_conf() {
    [[ ${NEURAL_EM_SLURM_LINK_ETC:-1} == 1 ]] || return 0
    if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$ETC/slurm.conf" ]]; then
        return 0
    fi
    if [[ -e $DEFAULT_CONF || -L $DEFAULT_CONF ]]; then
        say "warning: $DEFAULT_CONF exists and is not ours; srun inside jobs (which lose" \
            "SLURM_CONF) will read it instead of $ETC/slurm.conf"
        return 0
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$ETC/slurm.conf" "$DEFAULT_CONF"
}

unlink_default_conf() {
    if [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$ETC/slurm.conf" ]]; then
        rm -f "$DEFAULT_CONF"
        say "removed the link $DEFAULT_CONF"
    fi
}

node_ready() { sinfo -h -N -o "%T" | grep -Eq '^(idle|mixed|allocated)'; }

start_slurmctld() {
    running slurmctld && return 0
    port_free "$CTLD_PORT" || die "port $CTLD_PORT (slurmctld) is taken; set NEURAL_EM_SLURM_PORT_BASE"
    slurmctld -f "$ETC/slurm.conf"
    wait_for "slurmctld" scontrol ping
}

start_slurmd() {
    running slurmd && return 0
    port_free "$SLURMD_PORT" || die "port $SLURMD_PORT (slurmd) is taken; set NEURAL_EM_SLURM_PORT_BASE"
    slurmd -f "$ETC/slurm.conf"
    wait_for "the node to come up (slurmd)" node_ready
}

cmd_start() {
    check_tools
    local t0=$SECONDS
    write_configs
    link_default_conf
    start_munge
    start_mariadb
    start_slurmdbd
    setup_accounts
    start_slurmctld
    start_slurmd
    say "cluster '$CLUSTER' up in $((SECONDS - t0))s (account $ACCOUNT, $N_GPUS fake GPUs); state in $STATE"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_one() {
    local name=$1 pid
    pid=$(our_pid "$name")
    if [[ -z $pid ]]; then
        rm -f "$(pidfile "$name")"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
    say "stopped $name (pid $pid)"
}

cmd_stop() {
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_one "${DAEMONS[i]}"
    done
    unlink_default_conf
}

cmd_status() {
    local all=0 name pid
    for name in "${DAEMONS[@]}"; do
        pid=$(our_pid "$name")
        if [[ -n $pid ]]; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: stopped"
            all=1
        fi
    done
    return $all
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
