#!/usr/bin/env bash
# One Ray node, run by ray_cluster.sbatch as a Slurm task: task 0 starts the head, the others join it.
# Blocks until the Ray node stops (the sbatch script ends the step when the driver is done).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ray_env.sh"

temp_dir="$(ray_temp_dir)"
ip="$(node_ip "${SLURMD_NODENAME:-$(hostname -s)}")"
gpus=0
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  gpus=$(awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES")
fi

# Fixed ports come from the job's block; the rest (node manager, object manager, workers, agents'
# gRPC, metrics) are left to the kernel with 0 so that they cannot collide either.
args=(--block --disable-usage-stats --node-ip-address "$ip" --temp-dir "$temp_dir"
      --num-cpus "$SLURM_CPUS_PER_TASK" --num-gpus "$gpus"
      --min-worker-port 0 --max-worker-port 0
      --dashboard-agent-listen-port "$(ray_port agent)")

if [ "$SLURM_PROCID" -eq 0 ]; then
  dashboard=(--include-dashboard=false)
  if [ -n "${RLZOO_RAY_DASHBOARD_HOST:-}" ]; then
    case "$RLZOO_RAY_DASHBOARD_HOST" in
      127.*|localhost|::1) ;;
      *) echo "[ray_node] WARNING: the Ray dashboard listens on $RLZOO_RAY_DASHBOARD_HOST:$(ray_port dashboard)," \
              "reachable from the network; it can submit jobs to the cluster" >&2 ;;
    esac
    dashboard=(--include-dashboard=true --dashboard-host "$RLZOO_RAY_DASHBOARD_HOST"
               --dashboard-port "$(ray_port dashboard)")
  fi
  exec ray start --head --port "$(ray_port gcs)" --ray-client-server-port "$(ray_port client)" \
      "${dashboard[@]}" "${args[@]}"
fi

# Workers may start before the head listens: wait for its port rather than fail.
head_port="$(ray_port gcs)"
deadline=$((SECONDS + ${RLZOO_RAY_WAIT_S:-300}))
until (exec 3<>"/dev/tcp/$RLZOO_RAY_HEAD_IP/$head_port") 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "[ray_node] head $RLZOO_RAY_HEAD_IP:$head_port unreachable" >&2; exit 1; }
  sleep 1
done
exec ray start --address "$RLZOO_RAY_HEAD_IP:$head_port" "${args[@]}"
