#!/usr/bin/env bash
# Start a one-node SLURM cluster on this Debian machine, from the distribution's packages, to test
# traitpipe's slurm profile against a real scheduler (make cluster-test). Run as root.
#
# The node is declared as the profile expects a GPU node to be: 16 CPUs, 256 GB and two GPUs
# (SlurmdParameters=config_overrides: SLURM believes the configuration, not the hardware; the GPUs
# are counted, not real, and jobs run on the CPU). Two partitions, "cpu" and "gpu", the
# profile's defaults. No accounting daemon (slurmdbd): Snakemake's SLURM plugin then needs
# --slurm-status-command squeue and --slurm-no-account.
#
#   sudo bash scripts/local-slurm.sh          # start (installs slurm-wlm and munge when missing)
#   sudo bash scripts/local-slurm.sh stop
set -euo pipefail

if [[ ${1:-start} == stop ]]; then
    pkill -x slurmctld || true
    pkill -x slurmd || true
    pkill -x munged || true
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "local-slurm.sh: run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    echo ">> installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge > /dev/null
fi

host=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=traitpipe-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
MpiDefault=none
MaxArraySize=10001
MinJobAge=3600
NodeName=$host CPUs=16 RealMemory=256000 Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
# SLURM counts a GPU per device file: two stand-ins (it never opens them; CUDA never sees them)
mkdir -p /var/lib/traitpipe-slurm
touch /var/lib/traitpipe-slurm/gpu0 /var/lib/traitpipe-slurm/gpu1
cat > /etc/slurm/gres.conf <<EOF
NodeName=$host Name=gpu File=/var/lib/traitpipe-slurm/gpu[0-1]
EOF

# munge: the shared key comes with the package; the daemon refuses root unless forced
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged
# (re)start both SLURM daemons on this configuration, with a clean state
pkill -x slurmctld && sleep 1 || true
pkill -x slurmd && sleep 1 || true
slurmctld -c
slurmd

for _ in $(seq 60); do
    if sinfo -h -o "%t" 2> /dev/null | grep -qE "^(idle|mix|alloc)"; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "local-slurm.sh: the node did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
