"""Learning from recorded games and from a teacher, end to end: offline behavioural cloning
(`algo=bc`), BC as an auxiliary loss of an IMPALA run, kickstarting, and the errors on bad input.

The games are recorded on the spot with NLE: a scripted policy walks straight to the stairs of
MiniHack-Room-Random-5x5 (random start and stairs), so its action is a function of the screen that
a clone can learn, and nle.dataset indexes the ttyrecs NLE wrote.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_nld import altorg_directory

from rlzoo.algos.imitation import behavioural_cloning_loss, coefficient_schedule
from rlzoo.algos.objective import BatchTargets, Chunk
from rlzoo.config import ConfigError
from rlzoo.envs import env_spec, make_vec_env
from rlzoo.logging.metrics import read_metrics
from rlzoo.models import build_model
from rlzoo.nld import TtyrecStream, build_dataset, indexed_files, open_dataset
from rlzoo.runtime.auxiliary import CarriedState, Kickstarting, cloning_pass
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint, save_checkpoint
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.runtime.trainer import train
from rlzoo.unroll import DemonstrationUnroll

TASK = "MiniHack-Room-Random-5x5-v0"
TTY_ENV = [f"env.name={TASK}", "env.observation=tty", "model=tty"]
# A small terminal network: enough for a 5x5 room, and fast on CPUs.
TINY_TTY = ["model.char_embedding_dim=16", "model.color_embedding_dim=4", "model.text_channels=16",
            "model.message_out_dim=32", "model.status_out_dim=32", "model.crop_channels=[16,16]",
            "model.screen_channels=[8,16,16]", "model.fc_sizes=[128]", "model.lstm_size=64"]
# (row step, column step) on the screen -> compass action.
COMPASS = {(-1, 0): "N", (0, 1): "E", (1, 0): "S", (0, -1): "W", (-1, 1): "NE", (1, 1): "SE", (1, -1): "SW",
           (-1, -1): "NW"}


def walk_to_stairs(obs: dict, action_names: tuple[str, ...]) -> np.ndarray:
    """One step from the cursor (the hero) towards the '>' on the map (rows 1-21), per environment."""
    actions = []
    for chars, (row, col) in zip(obs["tty_chars"], obs["tty_cursor"]):
        rows, cols = np.nonzero(chars[1:22] == ord(">"))
        step = (int(np.sign(rows[0] + 1 - int(row))), int(np.sign(cols[0] - int(col)))) if len(rows) else (0, 0)
        actions.append(action_names.index(COMPASS.get(step, "N")))
    return np.array(actions)


def record_scripted(ttyrec_dir: Path, num_envs: int = 4, steps: int = 80, seed: int = 0) -> None:
    cfg = {"name": TASK, "observation": "tty", "save_ttyrec_every": 1, "ttyrec_dir": str(ttyrec_dir)}
    names = env_spec(cfg).action_names
    env = make_vec_env(cfg, num_envs, seed=seed)
    obs = env.reset()
    for _ in range(steps):
        obs, _, _, _ = env.step(walk_to_stairs(obs, names))
    env.close()


@pytest.fixture(scope="module")
def scripted_games(tmp_path_factory) -> Path:
    """An NLD dataset of the scripted policy: its directory (with the index, ttyrecs.db)."""
    root = tmp_path_factory.mktemp("scripted") / "ttyrecs"
    record_scripted(root)
    build_dataset(root)
    return root


def majority_share(directory: Path) -> float:
    """Share of the most frequent valid action in the dataset: what a clone that ignores the screen
    can reach at best."""
    dataset = open_dataset(directory / "ttyrecs.db")
    with TtyrecStream(dataset, env_spec({"name": TASK}).action_keys, 1, 64, loop_forever=False) as stream:
        actions = np.concatenate([batch["actions"][batch["valid"]] for batch in stream])
    return float(np.bincount(actions).max() / len(actions))


def copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    build_dataset(target, overwrite=True)  # the index holds absolute paths: point it at the copy
    return target


# --- offline behavioural cloning ------------------------------------------------------------------

@pytest.mark.integration
def test_offline_cloning_learns_the_scripted_policy_and_its_clone_plays(compose, scripted_games, tmp_path):
    run = tmp_path / "clone"
    # Feed-forward (the scripted policy needs no memory: it learns in fewer steps); the recurrent
    # state across batches is tested below and by the BC-aux run.
    base = ["algo=bc", f"algo.dataset={scripted_games}", *TTY_ENV, *TINY_TTY, "model.lstm_size=0",
            "runtime.precision=fp32", "runtime.learner_threads=1", "algo.lr=2e-3", "algo.lr_decay=none",
            "runtime.batch_size=8", "runtime.envs_per_actor=8", "logger.log_interval_s=0.001"]
    # Half the steps, then a resumed run to the full count: both through checkpoints as any run.
    first = train(compose([*base, "total_steps=4096"]), run)
    summary = train(compose([*base, "total_steps=8192"]), run)
    assert first["env_steps"] == 4096 and summary["env_steps"] == 8192
    assert load_checkpoint(latest_path(run))["learner"]["version"] == 8192 // (8 * 16)

    rows = read_metrics(run)
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 8192
    assert rows[0]["bc/loss"] == pytest.approx(np.log(8), abs=0.3)  # an untrained policy: about uniform
    late = rows[-8:]
    assert np.mean([r["bc/loss"] for r in late]) < 0.5 * rows[0]["bc/loss"]
    # Beating the most frequent action means reading the screen, not only the action frequencies.
    assert np.mean([r["bc/accuracy"] for r in late]) > majority_share(scripted_games) + 0.1
    assert rows[-1]["nld/skipped_files"] == 0 and rows[-1]["nld/games"] > 0
    assert rows[-1]["learner/policy_lag"] == 0

    # The clone is evaluated like any policy: in the env of its config.
    proc = subprocess.run([sys.executable, "-m", "rlzoo.evaluate", str(run), "--episodes", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert next(line for line in proc.stdout.splitlines() if line.startswith("episodes")).split()[1] == "4"


@pytest.mark.unit
def test_recurrent_state_carries_across_windows_of_a_game(compose):
    """Two consecutive batches of a row, each from the state the previous one left, give the
    policy's output on the whole sequence; a batch that does not follow on starts from zeros."""
    cfg = compose([*TTY_ENV, *TINY_TTY])
    spec = env_spec(cfg.env)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec)
    T, B = 6, 2
    gen = torch.Generator().manual_seed(1)
    obs = {"tty_chars": torch.randint(32, 127, (2 * T + 1, B, 24, 80), generator=gen, dtype=torch.uint8),
           "tty_colors": torch.randint(0, 16, (2 * T + 1, B, 24, 80), generator=gen).to(torch.int8),
           "tty_cursor": torch.randint(0, 24, (2 * T + 1, B, 2), generator=gen, dtype=torch.uint8)}
    first = torch.zeros(2 * T + 1, B, dtype=torch.bool)
    first[0] = True
    first[T + 2, 1] = True  # a new game in row 1, inside the second window
    with torch.no_grad():
        whole, _ = model({k: v[:2 * T] for k, v in obs.items()}, first[:2 * T], model.initial_state(B))

    def window(k: int, index: int) -> DemonstrationUnroll:
        cols = slice(k * T, (k + 1) * T + 1)
        return DemonstrationUnroll(
            obs={key: v[cols] for key, v in obs.items()}, first=first[cols],
            actions=whole["logits"][k * T:(k + 1) * T].argmax(-1), rewards=torch.zeros(T, B),
            dones=first[cols][1:], logits=torch.zeros(T, B, spec.num_actions), core_state=(),
            env_ids=torch.arange(B), unroll_index=torch.full((B,), index), policy_version=torch.zeros(B, dtype=torch.long),
            actor_ids=torch.zeros(B, dtype=torch.long), valid=torch.ones(T, B, dtype=torch.bool))

    carried = CarriedState(model)
    with torch.no_grad():
        for k in range(2):
            part = window(k, k)
            loss, stats = cloning_pass(model, part, carried, torch.float32, torch.device("cpu"))
            expected = behavioural_cloning_loss(whole["logits"][k * T:(k + 1) * T], part.actions, part.valid)
            torch.testing.assert_close(loss, expected)  # the windows' policy is the whole sequence's
            assert stats[1] == stats[2] == T * B  # the targets are its argmax actions
        restarted, _ = model({k: v[T:2 * T] for k, v in obs.items()}, first[T:2 * T], model.initial_state(B))
    # The second window from a zero state would differ: the carried state mattered.
    assert not torch.allclose(restarted["logits"], whole["logits"][T:])
    ids = torch.arange(B)
    assert all(s.abs().sum() > 0 for s in carried.get(ids, torch.tensor([2, 2])))
    assert all(s.abs().sum() == 0 for s in carried.get(ids, torch.tensor([5, 5])))  # does not follow on


# --- BC as an auxiliary loss of an online run ------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("algo", [[], ["algo=appo", "algo.minibatches=2"]], ids=["impala", "appo"])
def test_bc_auxiliary_loss_runs_online_and_skips_a_file_broken_mid_run(compose, scripted_games, tmp_path, algo):
    data = copy_dataset(scripted_games, tmp_path / "data")
    broken = indexed_files(open_dataset(data / "ttyrecs.db"))[0]
    broken.write_bytes(broken.read_bytes()[:-30])  # truncated after the index and the start check
    run = tmp_path / "run"
    summary = train(compose([*TTY_ENV, *TINY_TTY, *algo, "runtime.learner_threads=1", f"algo.bc_aux.dataset={data}",
                             "algo.bc_aux.ratio=2",
                             "algo.bc_aux.coef=2.0", "algo.bc_aux.schedule=linear", "algo.bc_aux.decay_steps=1024",
                             "algo.bc_aux.final=0.5", "total_steps=1280", "logger.log_interval_s=0.001"]), run)
    assert summary["env_steps"] == 1280
    rows = read_metrics(run)
    assert len(rows) == 1280 // 64
    for row in rows:  # every update logs the term, its coefficient on the schedule at that step
        assert row["bc/coef"] == pytest.approx(coefficient_schedule("linear", 2.0, row["env_steps"], 1024, 0.5))
        assert 0 <= row["bc/accuracy"] <= 1 and np.isfinite(row["bc/loss"]) and "loss/policy" in row
    # 20 updates × 8 rows × 16 steps (APPO: 2 minibatches × 4 rows), about twice the dataset's frames:
    # every game came round.
    assert rows[-1]["nld/skipped_files"] >= 1
    assert rows[-1]["nld/frames"] >= 20 * 8 * 16 - 8


# --- kickstarting -----------------------------------------------------------------------------------

def save_run(cfg, path: Path, seed: int, confidence: float = 1.0) -> Path:
    """A checkpoint as a run writes it, of a freshly initialised policy of `cfg` (its logits scaled
    by `confidence`: a fresh policy is close to uniform, a teacher is not)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, env_spec(cfg.env))
    with torch.no_grad():
        model.policy_head.weight.mul_(confidence)
    save_checkpoint(latest_path(path), {"learner": {"model": model.state_dict()}, "env_steps": 0,
                                        "config": OmegaConf.to_container(cfg, resolve=True)})
    return path


@pytest.mark.unit
def test_kickstarting_drives_the_student_to_the_teacher_on_a_fixed_batch(compose, tmp_path):
    cfg = compose([f"env.name={TASK}", "runtime.unroll_length=8"])
    teacher_dir = save_run(cfg, tmp_path / "teacher", seed=123, confidence=30.0)
    spec = env_spec(cfg.env)
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll.to_torch()
    block = OmegaConf.create({"teacher": str(teacher_dir), "kind": "kl", "coef": 1.0, "schedule": "constant",
                              "decay_steps": 0, "final": 0.0})
    kickstarting = Kickstarting(block, spec, torch.device("cpu"), torch.float32)
    teacher_before = {k: v.clone() for k, v in kickstarting.teacher.state_dict().items()}
    torch.manual_seed(cfg.seed)
    student = build_model(cfg.model, spec)
    with torch.no_grad():
        teacher_probs = kickstarting.teacher({k: v[:-1] for k, v in batch.obs.items()}, batch.first[:-1],
                                             kickstarting.teacher.initial_state(batch.num_columns))[0]["logits"].softmax(-1)

    def distance_to_teacher() -> float:  # mean total-variation distance of the action distributions
        with torch.no_grad():
            probs = student(batch.obs, batch.first, batch.core_state)[0]["logits"][:-1].softmax(-1)
        return float(0.5 * (probs - teacher_probs).abs().sum(-1).mean())

    before = distance_to_teacher()
    optimizer = torch.optim.Adam(student.parameters(), lr=5e-3)
    losses = []
    columns = torch.arange(batch.num_columns)
    for _ in range(40):
        # The same unroll each time: the teacher restarts from zeros (its unroll_index does not follow on).
        assert kickstarting.start_update(batch, None, env_steps=0) == {"kickstart/coef": 1.0}
        out, _ = student(batch.obs, batch.first, batch.core_state)
        loss, metrics = kickstarting(Chunk(batch, BatchTargets(None), out, student, 1.0, 0, columns))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert metrics["kickstart/loss"] == pytest.approx(float(loss.detach()))  # coef 1: the mean per step
        losses.append(float(loss.detach()))
    assert losses[0] > 0.1 and losses[-1] < 0.1 * losses[0], losses
    assert distance_to_teacher() < 0.3 * before
    for k, v in kickstarting.teacher.state_dict().items():  # frozen
        torch.testing.assert_close(v, teacher_before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in kickstarting.teacher.parameters())


@pytest.mark.integration
@pytest.mark.parametrize("algo", [[], ["algo=appo", "algo.epochs=2", "algo.minibatches=2"]], ids=["impala", "appo"])
def test_kickstarted_run_logs_its_decaying_term(compose, tmp_path, algo):
    cfg = compose([f"env.name={TASK}"])
    teacher = save_run(cfg, tmp_path / "teacher", seed=5)
    run = tmp_path / "student"
    train(compose([f"env.name={TASK}", *algo, "runtime.learner_threads=1", f"algo.kickstart.teacher={teacher}",
                   "algo.kickstart.decay_steps=256",
                   "total_steps=384", "logger.log_interval_s=0.001"]), run)
    rows = read_metrics(run)
    assert [r["kickstart/coef"] for r in rows] == [pytest.approx(max(0.0, 1 - r["env_steps"] / 256)) for r in rows]
    assert all(r["kickstart/loss"] > 0 for r in rows if r["kickstart/coef"] > 0)
    assert not any("kickstart/loss" in r for r in rows if r["kickstart/coef"] == 0)  # the teacher stops running


# --- bad input: one line naming what and where, before anything starts ---------------------------

@pytest.mark.unit
def test_bad_datasets_are_named_before_anything_starts(compose, scripted_games, tmp_path):
    def fails(overrides, message):
        run = tmp_path / "run"
        with pytest.raises(ConfigError, match=message) as err:
            train(compose(overrides), run)
        assert "\n" not in str(err.value)
        assert not run.exists()  # nothing started, not even the run directory

    bc = ["algo=bc", *TTY_ENV, *TINY_TTY]
    fails(bc, r"algo=bc needs algo\.dataset=")
    fails([*bc, f"algo.dataset={tmp_path / 'nowhere'}"], r"algo\.dataset='.*nowhere': no such directory")
    (tmp_path / "unindexed").mkdir()
    fails([*bc, f"algo.dataset={tmp_path / 'unindexed'}"], r"has no dataset index .*unindexed/ttyrecs\.db; build it "
                                                            r"with `python -m rlzoo\.nld")
    fails([*bc, f"algo.dataset={scripted_games}", "algo.dataset_name=other"], r"dataset 'other' is not in")
    fails([*bc, f"algo.dataset={scripted_games}", "runtime.batch_size=512", "runtime.envs_per_actor=512"],
          r"a batch of 512 dataset rows needs at least as many games")

    data = copy_dataset(scripted_games, tmp_path / "data")
    files = indexed_files(open_dataset(data / "ttyrecs.db"))
    files[1].write_bytes(b"")
    fails([*bc, f"algo.dataset={data}"], rf"algo\.dataset='.*data': ttyrec {files[1]} is empty")
    files[1].write_bytes(b"not a ttyrec at all")
    files[2].write_bytes(b"")
    fails([f"algo.bc_aux.dataset={data}", *TTY_ENV, *TINY_TTY],
          rf"algo\.bc_aux\.dataset='.*data': ttyrec {files[1]} is not a bz2 file \(1 more unusable files\)")

    altorg = altorg_directory(tmp_path / "altorg")
    build_dataset(altorg, layout="altorg")
    fails([*bc, f"algo.dataset={altorg}"], r"algo\.dataset='.*altorg': dataset 'rlzoo' has no actions")
    # Recorded games hold the terminal only.
    fails([f"env.name={TASK}", f"algo.bc_aux.dataset={scripted_games}"],
          r"algo\.bc_aux\.dataset: recorded games hold only the terminal .* reads \['crop', 'blstats'\]; use model=tty")
    fails([*bc, f"algo.dataset={scripted_games}", "bonus=rnd"], r"bonus='rnd': algo=bc learns from recorded games")
    fails([*TTY_ENV, *TINY_TTY, f"algo.bc_aux.dataset={scripted_games}", "algo.bc_aux.schedule=cosine"],
          r"algo\.bc_aux\.schedule='cosine' is not allowed")


@pytest.mark.unit
def test_bad_teachers_are_named_before_anything_starts(compose, tmp_path):
    symbolic = compose([f"env.name={TASK}"])
    tty_teacher = save_run(compose(TTY_ENV + TINY_TTY), tmp_path / "tty_teacher", seed=1)
    nethack_teacher = save_run(compose(["experiment=nethack_score"]), tmp_path / "nethack_teacher", seed=1)
    good = save_run(symbolic, tmp_path / "good", seed=1)
    (tmp_path / "garbage.pt").write_bytes(b"garbage")

    cases = [
        (tmp_path / "missing", r"no checkpoint at .*missing"),
        (tmp_path / "garbage.pt", r"garbage\.pt is not a readable checkpoint"),
        (nethack_teacher, r"the teacher acts in NetHackScore-v0 \(nethack, 23 actions\), this run in "
                          r"MiniHack-Room-Random-5x5-v0 \(minihack, 8 actions\); kickstarting needs the same action set"),
        (tty_teacher, r"the teacher's model cannot read this run's observations: model\.name='tty_cnn' reads "
                      r"\['tty_chars', 'tty_colors', 'tty_cursor'\]"),
    ]
    for teacher, message in cases:
        run = tmp_path / "run"
        with pytest.raises(ConfigError, match=rf"algo\.kickstart\.teacher='.*': .*{message}"):
            train(compose([f"env.name={TASK}", f"algo.kickstart.teacher={teacher}"]), run)
        assert not run.exists()
    with pytest.raises(ConfigError, match=r"algo\.kickstart\.decay_steps=0 must be >= 1"):
        train(compose([f"env.name={TASK}", f"algo.kickstart.teacher={good}", "algo.kickstart.decay_steps=0"]),
              tmp_path / "run")
    with pytest.raises(ConfigError, match=r"algo\.kickstart\.teacher=.* applies to online runs"):
        train(compose(["algo=bc", f"algo.kickstart.teacher={good}", "algo.dataset=x"]), tmp_path / "run")


@pytest.mark.integration
def test_cli_names_a_missing_dataset_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.train", "runtime=serial", "algo=bc", "model=tty",
                           "env.observation=tty", f"algo.dataset={tmp_path / 'nowhere'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"rlzoo-train: config error: algo.dataset='{tmp_path / 'nowhere'}': no such directory\n" in proc.stderr
