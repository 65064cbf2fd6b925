"""init_from (warm starts) and the config errors of evaluation, checkpoints and warm starts, which stop a
run before any worker starts."""
import pytest
import torch
from omegaconf import OmegaConf

from rlzoo.config import ConfigError
from rlzoo.runtime import sources
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint, save_checkpoint
from rlzoo.runtime.trainer import Trainer, train


@pytest.fixture
def no_workers(monkeypatch):
    """Fails a test that gets as far as starting rollout workers."""
    def refuse(*args, **kwargs):
        raise AssertionError("a rollout worker was started")

    monkeypatch.setattr(sources.SerialSource, "__init__", refuse)


@pytest.mark.unit
@pytest.mark.parametrize("overrides,message", [
    (["eval.interval_steps=32"], r"eval\.interval_steps=32 is below one learner batch .* 64 env steps"),
    (["eval.video_interval=2"], r"eval\.video_interval=2 needs evaluation"),
    (["eval.interval_steps=640", "eval.episodes=0"], r"eval\.episodes=0"),
    (["checkpoint.keep_last=-1"], r"checkpoint\.keep_last=-1"),
    (["checkpoint.best_metric=episode/return"], r"checkpoint\.best_metric='episode/return'"),
    (["init_from_parts=[optimizer]"], r"init_from_parts=.*must list model"),
    (["init_from_parts=[model,weights]"], r"init_from_parts="),
    (["init_from=/no/such/run"], r"init_from='/no/such/run': no checkpoint there"),
])
def test_bad_settings_stop_before_any_worker(compose, tmp_path, no_workers, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        train(compose(overrides), tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.unit
def test_init_from_another_model_names_what_differs(compose, tmp_path, no_workers):
    other = compose(["model.lstm_size=64"])
    source = tmp_path / "other.pt"
    save_checkpoint(source, {"learner": {"model": {}}, "config": OmegaConf.to_container(other, resolve=True)})
    with pytest.raises(ConfigError, match=rf"init_from='{source}': .*different model config.*lstm_size"):
        train(compose([f"init_from={source}"]), tmp_path / "run")


@pytest.mark.integration
def test_init_from_loads_the_source_weights_and_resume_takes_precedence(compose, tmp_path):
    train(compose(["total_steps=128", "seed=5", "algo.optimizer=adam"]), tmp_path / "source")
    source = load_checkpoint(latest_path(tmp_path / "source"))["learner"]

    model_only = Trainer(compose([f"init_from={tmp_path / 'source'}", "algo.optimizer=adam"]), tmp_path / "a")
    for k, v in source["model"].items():
        assert torch.equal(model_only.learner.model.state_dict()[k], v), k
    assert model_only.learner.optimizer.state_dict()["state"] == {}  # a fresh optimizer
    assert model_only.env_steps == 0 and model_only.learner.version == 0
    model_only.close()

    both = Trainer(compose([f"init_from={tmp_path / 'source' / 'checkpoints' / 'latest.pt'}",
                            "init_from_parts=[model,optimizer]", "algo.optimizer=adam"]), tmp_path / "b")
    moments = both.learner.optimizer.state_dict()["state"]
    assert moments and all(torch.equal(moments[i]["exp_avg"], source["optimizer"]["state"][i]["exp_avg"])
                           for i in moments)
    both.close()

    # The warm-started run trains, stops, and on its next start resumes its own checkpoint.
    cfg = [f"init_from={tmp_path / 'source'}", "algo.optimizer=adam"]
    train(compose([*cfg, "total_steps=64"]), tmp_path / "c")
    own = load_checkpoint(latest_path(tmp_path / "c"))["learner"]["model"]
    resumed = Trainer(compose([*cfg, "total_steps=128"]), tmp_path / "c")
    assert resumed.env_steps == 64
    for k, v in own.items():
        assert torch.equal(resumed.learner.model.state_dict()[k], v), k
    resumed.close()


@pytest.mark.integration
def test_init_from_brings_the_return_statistics_with_the_value_head(compose, tmp_path):
    appo = ["algo=appo", "total_steps=128"]
    train(compose(appo), tmp_path / "source")
    source = load_checkpoint(latest_path(tmp_path / "source"))["learner"]["objective"]["return_normalizers"]
    assert source["baseline"]["count"] > 1
    warm = Trainer(compose([*appo, f"init_from={tmp_path / 'source'}"]), tmp_path / "warm")
    assert warm.learner.objective.normalizers["baseline"].state_dict() == source["baseline"]
    warm.close()
