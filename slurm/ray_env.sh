# Shared by ray_cluster.sbatch and ray_node.sh: where each Ray node keeps its files and which ports it
# uses, all derived from the Slurm job id so two jobs sharing a node never collide.

# Each job owns a block of 20 ports below Linux's ephemeral range (32768+), so no port the kernel
# hands out at random can take one of them: 10000 + 20 * (job id mod 1100).
ray_port() {
  local base=$((10000 + 20 * (SLURM_JOB_ID % 1100)))
  case "$1" in
    gcs) echo $((base)) ;;
    client) echo $((base + 1)) ;;
    dashboard) echo $((base + 2)) ;;
    # One per Ray node on a machine (SLURM_LOCALID); 17 slots are left in the block.
    agent) echo $((base + 3 + ${SLURM_LOCALID:-0})) ;;
    *) echo "unknown port '$1'" >&2; return 1 ;;
  esac
}

# Per job and short: Ray puts Unix sockets under <temp>/session_<date>_<pid>/sockets/, and socket
# paths longer than 107 bytes fail to bind. That suffix takes at most 66 bytes.
ray_temp_dir() {
  local dir="${RLZOO_RAY_TMP:-/tmp}/rlzoo-ray-${SLURM_JOB_ID}"
  if [ ${#dir} -gt 40 ]; then
    echo "Ray temp dir '$dir' is ${#dir} bytes; keep it at most 40 (set RLZOO_RAY_TMP shorter)" >&2
    return 1
  fi
  echo "$dir"
}

# IPv4 address of a node name as the cluster resolves it.
node_ip() {
  local ip
  ip="$(getent ahostsv4 "$1" | awk 'NR == 1 {print $1}')"
  [ -n "$ip" ] || { echo "cannot resolve node '$1'" >&2; return 1; }
  echo "$ip"
}

# GPUs in the whole allocation, from whichever of Slurm's per-node/per-task variables is set.
expected_gpus() {
  local per_node="${SLURM_GPUS_PER_NODE:-}" per_task="${SLURM_GPUS_PER_TASK:-}"
  per_node="${per_node##*:}" per_task="${per_task##*:}"  # strip a type, as in "a100:2"
  if [ -n "$per_task" ]; then echo $((per_task * SLURM_NTASKS))
  elif [ -n "$per_node" ]; then echo $((per_node * SLURM_JOB_NUM_NODES))
  else echo 0
  fi
}
