"""End to end: collect on NetHackScore, annotate through a loopback OpenAI-compatible server, train
the reward model, then train an agent with bonus=motif."""

import pytest

from rlzoo.logging.metrics import read_metrics
from rlzoo.motif.cli import compose as compose_step, run_annotate, run_collect, run_train_reward
from rlzoo.motif.dataset import PairDataset
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.runtime.trainer import train

pytestmark = pytest.mark.integration

SMALL_MODEL = ["model.use_full_map=false", "model.fc_sizes=[64,64]", "model.lstm_size=0", "model.crop_channels=[8,8]"]


def test_offline_pipeline_then_motif_training(tmp_path, compose, monkeypatch):
    data_dir = tmp_path / "data"
    # Short episodes: a sequence joins the pairing pool when its episode ends.
    collect_args = [f"out_dir={data_dir}", "progress=false", "collect.num_pairs=60", "collect.num_envs=2",
                    "collect.keep_prob=0.5", "collect.pool_size=20", "env.max_episode_steps=100"]
    collected = run_collect(compose_step("collect", collect_args))
    assert collected["pairs"] == 60 and collected["episodes"] >= 2
    # Resuming a finished collection does nothing.
    assert run_collect(compose_step("collect", collect_args))["new_pairs"] == 0

    monkeypatch.setenv("RLZOO_TEST_KEY", "sk-never-written")
    with LoopbackJudge() as server:
        labelled = run_annotate(compose_step("annotate", [
            f"dataset_dir={data_dir}", "progress=false", f"llm.base_url={server.base_url}", "llm.model=judge",
            "llm.api_key_env=RLZOO_TEST_KEY",
        ]))
    assert labelled["labelled"] == 60 and labelled["failed"] == 0
    for path in data_dir.iterdir():  # the key never reaches a file
        assert b"sk-never-written" not in path.read_bytes()

    trained = run_train_reward(compose_step("train-reward", [
        f"dataset_dir={data_dir}", "progress=false", "train.epochs=1", "train.channels=16", "train.hidden=32",
    ]))
    model_path = data_dir / "reward_model.pt"
    assert model_path.exists() and trained["train_pairs"] + trained["val_pairs"] <= 60
    assert PairDataset.open(data_dir).count == 60

    cfg = compose(["experiment=nethack_score", "bonus=motif", f"bonus.reward_model_path={model_path}",
                         "total_steps=2000", f"output_root={tmp_path / 'runs'}", *SMALL_MODEL])
    summary = train(cfg, tmp_path / "run")
    assert summary["env_steps"] >= 2000
    metrics = read_metrics(tmp_path / "run")
    assert any("bonus/int_raw_mean" in m for m in metrics)
