#!/usr/bin/env bash
# Submit a command to run on a Ray cluster spanning a Slurm allocation (see ray_cluster.sbatch).
#
#   slurm/launch.sh --nodes 4 --cpus-per-node 32 --gpus-per-node 1 --time 48:00:00 -- \
#       rlzoo-train runtime=ray runtime.ray_address=auto env=minihack bonus=e3b seed=1
#
# Prints the Slurm job id. The command runs on the first node with RAY_ADDRESS pointing at the head;
# rlzoo-train with runtime.ray_address=auto connects there, its learner takes a GPU and its actors
# spread over all nodes. Options:
#   --nodes N               Slurm nodes (default 2)
#   --cpus-per-node C       CPUs per node given to Ray (default 8)
#   --gpus-per-node G       GPUs per node (default 0)
#   --ray-nodes-per-node K  Ray nodes per Slurm node (default 1; >1 only for testing on one machine)
#   --mem MEM               memory per node, sbatch syntax (e.g. 64G; default: the partition's)
#   --time T                wall time (default 24:00:00)
#   --partition P, --qos Q, --account A, --job-name NAME, --output PATTERN
#   --dashboard-host HOST   start the Ray dashboard on HOST (default: none; non-loopback warns)
#   --sbatch ARG            pass ARG to sbatch as is (repeatable)
#   --dry-run               print the sbatch command instead of running it
# Secrets (WANDB_API_KEY, ...) stay in the environment; never pass them as arguments here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nodes=2 cpus=8 gpus=0 per_node=1 time_limit=24:00:00 dry_run=0
extra=()

die() { echo "launch.sh: $*" >&2; exit 2; }
need_int() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) need_int "$1" "${2:-}"; nodes=$2; shift 2 ;;
    --cpus-per-node) need_int "$1" "${2:-}"; cpus=$2; shift 2 ;;
    --gpus-per-node) need_int "$1" "${2:-}"; gpus=$2; shift 2 ;;
    --ray-nodes-per-node) need_int "$1" "${2:-}"; per_node=$2; shift 2 ;;
    --mem) extra+=("--mem=${2:?}"); shift 2 ;;
    --time) time_limit="${2:?}"; shift 2 ;;
    --partition|--qos|--account|--job-name|--output) extra+=("$1=${2:?}"); shift 2 ;;
    --dashboard-host) export RLZOO_RAY_DASHBOARD_HOST="${2:?}"; shift 2 ;;
    --sbatch) extra+=("${2:?}"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (put the command after --)" ;;
  esac
done
[ $# -ge 1 ] || die "no command given after --"
[ "$nodes" -ge 1 ] && [ "$per_node" -ge 1 ] || die "--nodes and --ray-nodes-per-node must be at least 1"
[ $((cpus % per_node)) -eq 0 ] && [ "$cpus" -ge "$per_node" ] \
  || die "--cpus-per-node ($cpus) must be a positive multiple of --ray-nodes-per-node ($per_node)"

args=(--parsable --nodes="$nodes" --ntasks-per-node="$per_node" --cpus-per-task=$((cpus / per_node))
      --time="$time_limit")
if [ "$gpus" -gt 0 ]; then
  # Several Ray nodes on one machine must not claim the same GPUs: split them per task.
  [ $((gpus % per_node)) -eq 0 ] || die "--gpus-per-node ($gpus) must be a multiple of --ray-nodes-per-node"
  args+=(--gpus-per-task=$((gpus / per_node)))
fi
export RLZOO_SLURM_DIR="$here"
cmd=(sbatch "${args[@]}" "${extra[@]}" "$here/ray_cluster.sbatch" "$@")
if [ "$dry_run" -eq 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
else
  "${cmd[@]}"
fi
