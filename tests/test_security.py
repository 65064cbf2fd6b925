"""Security properties (SECURITY.md): Ray stays on loopback with token authentication, API keys never
reach a file or the console, loading a file never runs code, config paths stay inside their root, and
the LLM client only talks to its configured server."""
from __future__ import annotations

import builtins
import ipaddress
import json
import os
import pickle
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rlzoo.config import ConfigError, validate
from rlzoo.evaluate import main as evaluate_main
from rlzoo.motif.annotate import annotate
from rlzoo.motif.annotators import LLMAnnotator, ScoreGainAnnotator
from rlzoo.motif.captions import encode_message
from rlzoo.motif.dataset import PairDataset, Segment
from rlzoo.motif.llm_client import ChatClient, LLMError, LLMSettings
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.motif.prompts import SYSTEM_PROMPT, pair_prompt
from rlzoo.motif.reward_model import MotifReward
from rlzoo.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlzoo.runtime.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "slurm"

# ---------------------------------------------------------------------------------------------------
# Ray: every socket a local run opens listens on loopback; token authentication is on.

TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"


def _descendants(root: int) -> dict[int, str]:
    """pid -> command name of every live process below `root` (Ray's gcs_server, raylet, agents and
    workers are all started by the driver or by the raylet), from /proc."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        names[int(entry.name)] = name
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = names[child]
            todo.append(child)
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass  # the process exited, or one of its fds closed while we looked
    return inodes


def _hex_address(field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    host = field.split(":")[0]
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])  # /proc/net prints each 32-bit word little-endian
    return ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def _bound_sockets() -> dict[str, tuple[str, Any, int]]:
    """inode -> (protocol, local address, port) of every listening TCP and unconnected UDP socket."""
    found = {}
    for proto, state in (("tcp", TCP_LISTEN), ("tcp6", TCP_LISTEN), ("udp", UDP_UNCONNECTED), ("udp6", UDP_UNCONNECTED)):
        path = Path("/proc/net") / proto
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == state:
                found[cols[9]] = (proto, _hex_address(cols[1]), int(cols[1].split(":")[1], 16))
    return found


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # [::ffff:127.0.0.1], gRPC's dual-stack sockets
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def ray_listeners() -> list[tuple[int, str, str, Any, int]]:
    """(pid, process, protocol, address, port) of every socket this test's Ray processes listen on."""
    bound = _bound_sockets()
    rows = []
    for pid, name in _descendants(os.getpid()).items():
        for inode in _socket_inodes(pid):
            if inode in bound:
                rows.append((pid, name, *bound[inode]))
    return rows


def _external_ip() -> str | None:
    """This host's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def _auth_error_of_client(gcs_address: str, env: dict[str, str], timeout_s: float = 60.0) -> str:
    """Start a Ray client against the cluster; return its first authentication error line ("" if it
    connected instead). A refused client retries forever, so it is killed once it has said why."""
    code = f"import ray; ray.init(address={gcs_address!r}, logging_level='ERROR'); print('CONNECTED', flush=True)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(timeout_s, proc.kill)  # ends the read loop below if the client hangs
    watchdog.start()
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "CONNECTED" in line:
                return ""
            if "InvalidAuthToken" in line or "Unauthenticated" in line:
                return line
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    raise AssertionError("the client neither connected nor reported an authentication error")


@pytest.mark.integration
def test_local_ray_run_listens_on_loopback_only_with_token_auth(compose, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # Ray would write ~/.ray/auth_token here if it made a token file
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = compose(["runtime=ray", "runtime.num_actors=1", "total_steps=1024", "logger.log_interval_s=0.5",
                   "checkpoint.interval_s=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    import ray

    try:
        gcs_address = ray.get_runtime_context().gcs_address
        # Another user of this machine: no token. Ray clients rewrite 127.0.0.1 to the host's address
        # unless told to stay local.
        outsider = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        outsider["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        refusals = [_auth_error_of_client(gcs_address, outsider),
                    _auth_error_of_client(gcs_address, {**outsider, "RAY_AUTH_TOKEN": "0" * 64})]
        external = _external_ip()
        if external is not None:  # from the network, the GCS port does not answer at all
            with pytest.raises(OSError):
                socket.create_connection((external, int(gcs_address.rsplit(":", 1)[1])), timeout=5).close()
    except BaseException:
        trainer.close()
        raise

    seen: dict[tuple, None] = {}
    done = threading.Event()

    def watch() -> None:  # actors and workers come and go: look until the run ends
        while not done.is_set():
            seen.update(dict.fromkeys((name, proto, str(addr), port) for _, name, proto, addr, port in ray_listeners()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        summary = trainer.run()
    finally:
        done.set()
        watcher.join(timeout=10)

    assert summary["env_steps"] >= 1024
    assert gcs_address.startswith("127.0.0.1:")
    assert all(refusals), refusals
    names = {row[0] for row in seen}
    # The check saw Ray's own servers and the rollout actor, so "all loopback" is not vacuous.
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), seen
    exposed = [row for row in seen if not _is_loopback(ipaddress.ip_address(row[2]))]
    assert not exposed, f"Ray processes listening beyond loopback: {exposed}"
    assert not (home / ".ray" / "auth_token").exists()  # the token lived in the environment only
    # The run shut its Ray down; a stray Ray call now fails instead of starting an untokened cluster.
    assert not ray.is_initialized()
    with pytest.raises(Exception, match="not been started|not initialized|ray.init"):
        ray.put(1)
    assert not ray.is_initialized()
    private = Path("/tmp") / f"rlzoo-u{os.getuid()}"
    assert private.stat().st_mode & 0o777 == 0o700  # Ray's world-writable session dirs sit below it


@pytest.mark.integration
def test_local_ray_refuses_to_run_without_token_auth(compose, monkeypatch):
    from rlzoo.runtime.ray_runtime import RayConnectionError, connect

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayConnectionError, match="RAY_AUTH_MODE='disabled'.*token authentication"):
        connect(compose(["runtime=ray"]))


# The Ray-on-Slurm template, run with stand-ins for Slurm's commands and for `ray` (no Slurm needed).

STUB_RAY = '#!/usr/bin/env bash\necho "RAY $*"\n'
STUB_SRUN = '#!/usr/bin/env bash\necho "SRUN_ENV MODE=$RAY_AUTH_MODE TOKEN=$RAY_AUTH_TOKEN"\n'
STUB_SCONTROL = '#!/usr/bin/env bash\necho localhost\n'


def _stub_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # ray_wait.py would wait for the Ray nodes; every other python call is the real interpreter.
    python = f'#!/usr/bin/env bash\n[[ "$1" == *ray_wait.py ]] && exit 0\nexec {sys.executable} "$@"\n'
    for name, text in (("ray", STUB_RAY), ("srun", STUB_SRUN), ("scontrol", STUB_SCONTROL), ("python", python)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RLZOO_", "SLURM_"))}
    env.update(PATH=f"{_stub_bin(tmp_path)}:{env['PATH']}", SLURM_JOB_ID="4242", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURMD_NODENAME="localhost", SLURM_CPUS_PER_TASK="2", SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_JOB_NODELIST="localhost", RLZOO_SLURM_DIR=str(SLURM))
    env.update(extra)
    return env


@pytest.mark.integration
@pytest.mark.parametrize("host, exposed", [(None, False), ("127.0.0.1", False), ("0.0.0.0", True)])
def test_slurm_ray_head_starts_dashboard_only_when_asked_and_warns_off_loopback(tmp_path, host, exposed):
    extra = {"RLZOO_RAY_DASHBOARD_HOST": host} if host else {}
    env = _slurm_env(tmp_path, **extra)
    out = subprocess.run(["bash", str(SLURM / "ray_node.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    (command,) = [line for line in out.stdout.splitlines() if line.startswith("RAY start --head")]
    if host is None:
        assert "--include-dashboard=false" in command and "--dashboard-host" not in command
    else:
        assert f"--include-dashboard=true --dashboard-host {host} " in command
    assert ("WARNING" in out.stderr and "reachable from the network" in out.stderr) == exposed
    assert "--node-ip-address 127.0.0.1" in command  # the node's own address, never 0.0.0.0


@pytest.mark.integration
def test_slurm_ray_template_always_uses_a_fresh_token_kept_out_of_files(tmp_path):
    tokens = []
    for attempt in range(2):
        work = tmp_path / str(attempt)
        work.mkdir()
        # A user's own RAY_AUTH_MODE=disabled does not turn authentication off.
        env = _slurm_env(work, RAY_AUTH_MODE="disabled")
        driver = 'echo "DRIVER_ENV MODE=$RAY_AUTH_MODE TOKEN=$RAY_AUTH_TOKEN ADDRESS=$RAY_ADDRESS"'
        out = subprocess.run(["bash", str(SLURM / "ray_cluster.sbatch"), "bash", "-c", driver], env=env, cwd=work,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = {kind: (mode, token) for kind, mode, token in
                re.findall(r"(SRUN_ENV|DRIVER_ENV) MODE=(\S*) TOKEN=(\S*)", out.stdout)}
        assert seen["SRUN_ENV"] == seen["DRIVER_ENV"]  # Ray nodes and driver share the job's token
        mode, token = seen["DRIVER_ENV"]
        assert mode == "token" and re.fullmatch(r"[0-9a-f]{64}", token)
        assert not any(token in p.read_text(errors="replace") for p in work.rglob("*") if p.is_file())
        tokens.append(token)
    assert tokens[0] != tokens[1]


@pytest.mark.integration
def test_slurm_launch_command_carries_no_secret(tmp_path):
    secret = "rlzoo-test-secret-launch-7f3a"
    env = {**os.environ, "WANDB_API_KEY": secret, "OPENAI_API_KEY": secret}
    out = subprocess.run(["bash", str(SLURM / "launch.sh"), "--dry-run", "--", "rlzoo-train", "logger.wandb=true"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ray_cluster.sbatch rlzoo-train logger.wandb=true" in out.stdout
    assert secret not in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------
# Secrets: a planted key appears in no file a training run or an annotation writes, nor on the console.

TEXTS = ["You kill the newt!", "It's a wall.", "$ - 3 gold pieces.", "It's solid stone."]


def _segment(text: str) -> Segment:
    return Segment(encode_message(text)[None], np.zeros((1, 27), np.int32), 0.0, (1, 2), 0.0)


def _pair_dataset(path: Path, n: int = 12) -> PairDataset:
    data = PairDataset.create(path, n, 1, {})
    for i in range(n):
        data.append(_segment(TEXTS[i % len(TEXTS)]), _segment(TEXTS[(i + 1 + i // len(TEXTS)) % len(TEXTS)]))
    data.flush()
    return data


def _files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.integration
def test_api_keys_never_reach_files_or_console(tmp_path):
    wandb_key = "rlzoo-test-secret-wandb-" + "5e" * 12  # 40 characters, the length W&B expects
    llm_key = "rlzoo-test-secret-llm-c0ffee"
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    # Everything the runs write lands below tmp_path: the run directory, W&B's files, HOME, TMPDIR.
    env = {**os.environ, "WANDB_API_KEY": wandb_key, "OPENAI_API_KEY": llm_key, "WANDB_MODE": "offline",
           "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "rlzoo.train", "runtime=serial", "runtime.envs_per_actor=4", "runtime.batch_size=4",
         "runtime.unroll_length=16", "total_steps=256", "logger.wandb=true", "logger.log_interval_s=0.1",
         f"hydra.run.dir={run_dir}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run_dir / "checkpoints" / "latest.pt").exists() and list((run_dir / "wandb").rglob("*.wandb"))

    dataset = tmp_path / "pairs"
    _pair_dataset(dataset)
    with LoopbackJudge() as judge:
        annotation = subprocess.run(
            [sys.executable, "-m", "rlzoo.motif", "annotate", f"dataset_dir={dataset}",
             f"llm.base_url={judge.base_url}", "llm.model=judge", "progress=true"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert annotation.returncode == 0, annotation.stderr[-3000:]
    assert (dataset / "labels.jsonl").read_text().count("\n") == 12
    # The key was used, in the Authorization header only.
    assert judge.requests and all(r["headers"]["Authorization"] == f"Bearer {llm_key}" for r in judge.requests)

    for key in (wandb_key, llm_key):
        assert not _files_holding(tmp_path, key), key
        for proc in (train, annotation):
            assert key not in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# Loading files: a pickle that would run code on load is refused, and nothing runs.

class _CreatesFile:
    """Unpickling this calls open(path, "w"): a stand-in for any code an attacker could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return builtins.open, (self.path, "w")


def _assert_payload_would_run(tmp_path: Path) -> None:
    """The crafted object does create its file when unpickled unsafely: the refusals below are real."""
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()


@pytest.mark.unit
def test_crafted_checkpoint_is_refused_by_loader_and_evaluate(tmp_path, capsys):
    _assert_payload_would_run(tmp_path)
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint(path, {"learner": {"model": _CreatesFile(marker)}, "env_steps": 0})
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        load_checkpoint(path)
    with pytest.raises(SystemExit, match="rlzoo-evaluate: refusing to load"):
        evaluate_main([str(tmp_path)])
    assert not marker.exists()


@pytest.mark.unit
def test_crafted_reward_model_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "reward_model.pt"
    torch.save({"arch": {}, "state_dict": _CreatesFile(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        MotifReward.load(path)
    assert not marker.exists()


@pytest.mark.unit
@pytest.mark.parametrize("field", ["messages", "length"])
def test_crafted_pair_dataset_array_is_refused(tmp_path, field):
    marker = tmp_path / "marker"
    _pair_dataset(tmp_path / "pairs", n=2)
    crafted = np.empty(2, dtype=object)
    crafted[:] = [_CreatesFile(marker), 0]
    np.save(tmp_path / "pairs" / f"{field}.npy", crafted, allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False|Python objects"):
        PairDataset.open(tmp_path / "pairs")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Paths from config stay below their root.

@pytest.mark.unit
@pytest.mark.parametrize("run_name", ["../../etc", "/abs/run", "a/../../b", ".."])
def test_run_name_must_be_a_plain_name(compose, run_name):
    with pytest.raises(ConfigError, match="run_name"):
        validate(compose([f"run_name='{run_name}'"]))


@pytest.mark.unit
def test_plain_run_name_is_accepted(compose):
    validate(compose(["run_name=MiniHack-Room-5x5-v0-e3b-s1"]))


@pytest.mark.integration
def test_run_name_cannot_leave_output_root_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.train", "runtime=serial", f"output_root={tmp_path / 'runs'}",
                           "run_name=../../../../escape", "total_steps=16"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "run_name" in proc.stderr
    assert not (tmp_path / "escape").exists()


@pytest.mark.unit
@pytest.mark.parametrize("labels_name", ["../outside", "{abs}/labels", "sub/labels"])
def test_motif_labels_name_cannot_leave_the_dataset(tmp_path, labels_name):
    _pair_dataset(tmp_path / "pairs", n=2)
    with pytest.raises(ValueError, match="labels_name"):
        annotate(tmp_path / "pairs", ScoreGainAnnotator(), {"annotator": "score_gain"},
                 labels_name=labels_name.format(abs=tmp_path), progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".jsonl", ".json") and p.name != "meta.json"]


# ---------------------------------------------------------------------------------------------------
# The LLM client: its configured server only, TLS verified, nothing but the prompt and captions.

def _client(base_url: str, **kw: Any) -> ChatClient:
    return ChatClient(LLMSettings(base_url=base_url, model="judge", backoff_s=0.01, max_backoff_s=0.02, **kw))


class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _serve(handler: type, context: ssl.SSLContext | None = None) -> HTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.mark.unit
def test_llm_client_does_not_follow_redirects_or_proxies(monkeypatch):
    with LoopbackJudge() as elsewhere:
        handler = type("Redirect", (_Redirector,), {"target": elsewhere.base_url + "/chat/completions"})
        server = _serve(handler)
        try:
            with pytest.raises(LLMError, match="HTTP 307"):
                _client(f"http://127.0.0.1:{server.server_address[1]}/v1", max_retries=2).chat(
                    [{"role": "user", "content": "x"}])
        finally:
            server.shutdown()
            server.server_close()
        assert not elsewhere.requests  # the redirect target was never contacted

        # Proxy variables in the environment do not divert requests either.
        with LoopbackJudge() as judge:
            monkeypatch.setenv("HTTP_PROXY", elsewhere.base_url.rsplit("/", 1)[0])
            monkeypatch.setenv("http_proxy", elsewhere.base_url.rsplit("/", 1)[0])
            _client(judge.base_url).chat([{"role": "user", "content": "x"}])
            assert len(judge.requests) == 1 and not elsewhere.requests


@pytest.mark.unit
@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1", "http://llm.example.org/v1", "http://127.0.0.1.nip.io/v1",
                                 "http://[fe80::1]:8000/v1", "http://0.0.0.0:8000/v1"])
def test_llm_client_refuses_plain_http_off_loopback(url, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-would-travel-in-clear-text")
    with pytest.raises(ValueError, match=r"^llm\.base_url=.*plain http .*unencrypted; use https://, a loopback "
                                         r"host .*set llm\.allow_insecure_http=true"):
        ChatClient(LLMSettings(base_url=url, model="judge"))


@pytest.mark.unit
@pytest.mark.parametrize("url, allow", [
    ("http://127.0.0.1:8000/v1", False), ("http://127.8.9.10/v1", False), ("http://[::1]:8000/v1", False),
    ("http://localhost:8000/v1", False), ("http://LocalHost/v1", False), ("https://llm.example.org/v1", False),
    ("http://10.0.0.5:8000/v1", True),
])
def test_llm_client_accepts_loopback_https_or_explicit_insecure_http(url, allow):
    assert ChatClient(LLMSettings(base_url=url, model="judge", allow_insecure_http=allow)).settings.base_url == url


@pytest.mark.unit
def test_insecure_llm_url_errors_name_the_config_key(compose):
    from rlzoo.motif.cli import compose as compose_motif, run_annotate
    from rlzoo.motif.oni_annotator import AnnotatorSpec, OnlineAnnotator

    oni = compose(["bonus=oni", "bonus.llm.base_url=http://10.0.0.5:8000/v1"]).bonus.llm
    assert oni.allow_insecure_http is False  # the key exists, off by default
    with pytest.raises(ValueError, match=r"^bonus\.llm\.base_url=.*set bonus\.llm\.allow_insecure_http=true"):
        OnlineAnnotator(AnnotatorSpec(task="message", llm=dict(oni)))
    annotate_cfg = compose_motif("annotate", ["dataset_dir=unused", "llm.base_url=http://10.0.0.5:8000/v1"])
    assert annotate_cfg.llm.allow_insecure_http is False
    with pytest.raises(ValueError, match=r"^llm\.base_url=.*set llm\.allow_insecure_http=true"):
        run_annotate(annotate_cfg)
    with pytest.raises(ValueError, match=r"bonus\.llm\.allow_insecure_http='yes' must be true or false"):
        OnlineAnnotator(AnnotatorSpec(task="message", llm={**oni, "allow_insecure_http": "yes"}))


@pytest.mark.unit
def test_llm_client_settings_cannot_change_after_creation():
    client = _client("http://127.0.0.1:9/v1")
    with pytest.raises(AttributeError):
        client.settings.base_url = "http://attacker.example/v1"  # type: ignore[misc]


class _Silent(BaseHTTPRequestHandler):
    posts: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.posts.append(self.path)
        self.send_response(500)
        self.end_headers()


@pytest.mark.integration
def test_llm_client_verifies_tls_certificates(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Silent", (_Silent,), {"posts": []})
    server = _serve(handler, context)
    try:
        client = _client(f"https://127.0.0.1:{server.server_address[1]}/v1", max_retries=1)
        assert client._ssl is not None and client._ssl.verify_mode == ssl.CERT_REQUIRED and client._ssl.check_hostname
        with pytest.raises(LLMError, match="CERTIFICATE_VERIFY_FAILED"):
            client.chat([{"role": "user", "content": "x"}])
    finally:
        server.shutdown()
        server.server_close()
    assert handler.posts == []  # nothing was sent over the unverified connection


@pytest.mark.unit
def test_llm_requests_carry_only_model_prompt_captions_and_sampling(tmp_path):
    data = _pair_dataset(tmp_path / "pairs")
    with LoopbackJudge() as judge:
        settings = LLMSettings(base_url=judge.base_url, model="judge", api_key_env=None)
        annotate(tmp_path / "pairs", LLMAnnotator(ChatClient(settings), "score"), {"annotator": "llm"}, progress=False)
    assert judge.requests
    allowed = set()
    for i in range(data.count):
        first, second = (data.arrays["messages"][i, s, 0].tobytes().rstrip(b"\0").decode() for s in (0, 1))
        allowed.add(pair_prompt(first, second, "score"))
    for request in judge.requests:
        body = request["body"]
        assert set(body) == {"model", "messages", "temperature", "top_p", "max_tokens"}
        assert body["model"] == "judge" and body["temperature"] == 0.1 and body["top_p"] == 0.95
        system, user = body["messages"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user" and user["content"] in allowed
        assert "Authorization" not in request["headers"]  # no key configured, none sent
    assert json.dumps(judge.requests).count(str(tmp_path)) == 0  # no local paths leave the machine
