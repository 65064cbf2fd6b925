"""Wait until a Ray cluster offers the expected CPUs and GPUs, so the driver starts on the whole allocation.

Usage: python ray_wait.py --cpus N --gpus G [--timeout S] [--address HOST:PORT]
Connects through RAY_ADDRESS (and the token in RAY_AUTH_TOKEN) unless --address is given. Exits 0 when
the resources are there, 1 on timeout, printing what joined either way.
"""

import argparse
import sys
import time

import ray


def wait_for_resources(cpus: float, gpus: float, timeout_s: float, poll_s: float = 1.0) -> dict[str, float]:
    """Poll the connected cluster until it has at least `cpus` CPUs and `gpus` GPUs; return its resources."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        have = ray.cluster_resources()
        seen = (have.get("CPU", 0.0), have.get("GPU", 0.0), len([n for n in ray.nodes() if n["Alive"]]))
        if seen != last:
            print(f"[ray_wait] {seen[2]} nodes, {seen[0]:g}/{cpus:g} CPUs, {seen[1]:g}/{gpus:g} GPUs", flush=True)
            last = seen
        if seen[0] >= cpus and seen[1] >= gpus:
            return have
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout_s:g} s the cluster has {seen[0]:g} CPUs and {seen[1]:g} GPUs")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=float, required=True)
    parser.add_argument("--gpus", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--address", default=None, help="default: RAY_ADDRESS")
    args = parser.parse_args(argv)
    # The head may still be starting: retry the connection within the same deadline.
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)
    try:
        wait_for_resources(args.cpus, args.gpus, max(deadline - time.monotonic(), 0.0))
    except TimeoutError as err:
        print(f"[ray_wait] {err}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
