"""APPO and DrAC in the learner: behaviour values from the rollout, the epochs × minibatches loop, how
chunks, replicas and extra terms are weighted, UCB-DrAC's credit, end-to-end runs and config errors."""

import pytest
import torch

from rlzoo.algos.drac import DracTerm, batch_return_target
from rlzoo.algos.objective import Chunk, build_objective
from rlzoo.algos.rewards import RewardMix
from rlzoo.config import ConfigError
from rlzoo.envs import env_spec
from rlzoo.logging.metrics import read_metrics
from rlzoo.models import build_model
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.runtime.trainer import train
from rlzoo.unroll import Unroll
from replicas import sharded_weights
from unrolls import make_unroll

FP32 = ["runtime.precision=fp32", "runtime.learner_threads=1"]
# Adam's first steps divide by |gradient| + eps: with APPO's eps of 1e-7 a rounding-level difference in a
# near-zero gradient moves a weight by up to lr. A larger eps keeps equal gradients visibly equal.
STEADY_ADAM = ["algo.eps=0.01"]
CPU = torch.device("cpu")


def rollout(cfg, actor_id=0):
    # Seeded as the learner seeds its network: the actor acts with the learner's initial weights (π = μ).
    torch.manual_seed(cfg.seed)
    return RolloutWorker(cfg, actor_id, env_spec(cfg.env)).rollout().unroll


def trained(cfg, batch, updates=1):
    learner = Learner(cfg, env_spec(cfg.env), num_envs=batch.num_columns, device=CPU)
    for step in range(updates):
        learner.update(batch, env_steps=step)
    return learner


def assert_same_weights(a, b):
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def assert_moved(learner, cfg):
    fresh = Learner(cfg, env_spec(cfg.env), num_envs=4, device=CPU).model.state_dict()
    moved = any(not torch.equal(v, fresh[k]) for k, v in learner.model.state_dict().items())
    assert moved, "the update changed nothing"


@pytest.mark.unit
@pytest.mark.parametrize("algo, heads", [
    (["algo=appo"], ["baseline", "int_baseline"]),
    (["algo.drac.augmentation=ucb", "experiment=procgen_coinrun"], ["baseline", "int_baseline"]),
    ([], []),  # IMPALA reads no behaviour values: the actor skips the inference on obs[T]
])
def test_rollout_records_the_behaviour_values_of_every_head_and_the_bootstrap_step(compose, algo, heads):
    cfg = compose([*algo, "bonus=rnd", "runtime.unroll_length=8", *FP32])
    worker = RolloutWorker(cfg, 0, env_spec(cfg.env))
    u = worker.rollout().unroll.to_torch()
    with torch.no_grad():
        out, _ = worker.model(u.obs, u.first, u.core_state)
    assert sorted(u.values) == heads
    for key in u.values:
        assert u.values[key].shape == (u.num_steps + 1, u.num_columns)
        torch.testing.assert_close(u.values[key], out[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(u.logits, out["logits"][:-1], rtol=1e-4, atol=1e-5)
    if heads:  # the recurrent state before obs[T], from which the learner recomputes V(obs[T])
        last = {k: v[-1:] for k, v in u.obs.items()}
        with torch.no_grad():
            out_t, _ = worker.model(last, u.first[-1:], u.bootstrap_state)
        for key in heads:
            torch.testing.assert_close(out_t[key][0], u.values[key][-1], rtol=1e-4, atol=1e-5)
    else:
        assert u.bootstrap_state == ()


@pytest.mark.unit
@pytest.mark.parametrize("model", ["model.lstm_size=256", "model.lstm_size=0"])
def test_appo_gae_bootstraps_from_the_learners_network_not_the_actors_value(compose, model):
    """As Sample Factory: V(obs[T]) comes from the learner's network as the batch arrives (with the actor's
    recurrent state), so the actor's value there does not change the update; V(obs[t<T]) does."""
    cfg = compose(["algo=appo", "runtime.unroll_length=8", model, *FP32, *STEADY_ADAM])
    batch = rollout(cfg)
    # With the weights the actor acted with, the learner's V(obs[T]) is the actor's: same state, same obs.
    fresh = Learner(cfg, env_spec(cfg.env), num_envs=batch.num_columns, device=CPU)
    recomputed = fresh._bootstrap_from_learner(batch.to_torch()).values
    for key, values in batch.values.items():
        torch.testing.assert_close(recomputed[key][-1], torch.from_numpy(values[-1]), rtol=1e-4, atol=1e-5)
    reference = trained(cfg, batch)
    for key in batch.values:
        batch.values[key][-1] += 100.0
    assert_same_weights(reference, trained(cfg, batch))
    for key in batch.values:
        batch.values[key][0] += 100.0
    changed = trained(cfg, batch).model.state_dict()
    assert any(not torch.equal(v, changed[k]) for k, v in reference.model.state_dict().items())


@pytest.mark.unit
@pytest.mark.parametrize("advantages, bonus", [("vtrace", "none"), ("gae", "rnd")])
def test_chunked_appo_update_over_epochs_and_minibatches_equals_one_pass(compose, advantages, bonus):
    """Chunks of one column (V-trace: a pass without gradient first for the minibatch's advantage
    statistics) give the update of whole minibatches; shuffled minibatches over two epochs."""
    overrides = ["algo=appo", f"algo.advantages={advantages}", f"bonus={bonus}", "algo.epochs=2",
                 "algo.minibatches=2", "algo.shuffle_minibatches=true", "runtime.unroll_length=8", *FP32,
                 *STEADY_ADAM]
    cfg = compose(overrides)
    batch = rollout(cfg)
    whole = trained(cfg, batch)
    chunked = trained(compose([*overrides, "runtime.learner_chunk=1"]), batch)
    assert_same_weights(whole, chunked)
    assert_moved(whole, cfg)
    assert whole.version == 1  # versions count updates, not the 4 optimizer steps of one


@pytest.mark.unit
@pytest.mark.parametrize("algo", ["impala", "appo"])
def test_drac_term_is_weighted_as_the_algorithm_counts_samples(compose, algo):
    """A term's mean counts a chunk's samples like the objective does (IMPALA: summed, APPO: averaged
    over the minibatch), so chunking leaves the update unchanged (grayscale draws nothing random)."""
    overrides = ["experiment=procgen_coinrun", f"algo={algo}", "algo.drac.augmentation=grayscale",
                 "algo.drac.coef=10.0", "runtime.unroll_length=4", *FP32, *STEADY_ADAM]
    cfg = compose(overrides)
    batch = rollout(cfg)
    whole = trained(cfg, batch)
    chunked = trained(compose([*overrides, "runtime.learner_chunk=1"]), batch)
    assert_same_weights(whole, chunked)
    # The minimised total: IMPALA's sums plus N × the term's mean; APPO's means plus the term's mean.
    m = Learner(cfg, env_spec(cfg.env), num_envs=4, device=CPU).update(batch, env_steps=0)
    n = 1 if algo == "appo" else batch.size
    expected = (m["loss/policy"] + cfg.algo.baseline_cost * m["loss/baseline"]
                - cfg.algo.entropy_cost * m["policy/entropy"] * n + m["loss/drac"] * n)
    assert m["loss/drac"] > 0 and m["loss/total"] == pytest.approx(expected, rel=1e-4)
    without = trained(compose([*overrides, "algo.drac.augmentation=none"]), batch)
    assert any(not torch.allclose(v, without.model.state_dict()[k]) for k, v in whole.model.state_dict().items())


@pytest.mark.unit
def test_appo_objective_gradient_at_ratio_one_is_impalas_over_the_sample_count(compose):
    """On the first minibatch (π = μ) with no clipping, normalisation, value or entropy terms, the
    objectives' parameter gradients differ only by APPO's mean: ∇APPO · T·B = ∇IMPALA."""
    common = ["algo.baseline_cost=0.0", "algo.entropy_cost=0.0", "algo.discount=0.99", *FP32]
    impala_cfg = compose(common)
    appo_cfg = compose(["algo=appo", "algo.advantages=vtrace", "algo.normalize_returns=false",
                        "algo.normalize_advantages=false", "algo.clip_ratio=1e6", "algo.clip_value=0", *common])
    spec = env_spec(impala_cfg.env)
    torch.manual_seed(0)
    model = build_model(impala_cfg.model, spec)
    batch = rollout(impala_cfg).to_torch()

    def gradient(cfg):
        model.zero_grad()
        out, _ = model(batch.obs, batch.first, batch.core_state)
        on_policy = Unroll(**{**vars(batch), "logits": out["logits"][:-1].detach()})
        objective = build_objective(cfg.algo, cfg.bonus)
        chunk = Chunk(on_policy, objective.prepare(on_policy, None), out, None, 1.0, 0,
                      torch.arange(on_policy.num_columns))
        objective.loss(chunk, None)[0].backward()
        return [p.grad.clone() for p in model.parameters()]

    impala_grads, appo_grads = gradient(impala_cfg), gradient(appo_cfg)
    assert any(g.abs().sum() > 0 for g in impala_grads)
    for a, i in zip(appo_grads, impala_grads):
        torch.testing.assert_close(a * batch.size, i, rtol=1e-4, atol=1e-6)


def surrogate(learner, batch):
    """The clipped surrogate of the whole batch under the learner's current network, with the
    batch's GAE advantages normalised over the batch (what every epoch optimises)."""
    objective = learner.objective
    targets = objective.prepare(batch, None)
    adv = targets.advantages
    with torch.no_grad():
        out = learner._forward(batch.obs, batch.first, batch.core_state)
        chunk = Chunk(batch, targets, out, learner._forward, 1.0, 0, torch.arange(batch.num_columns))
        return objective.loss(chunk, (float(adv.mean()), float(adv.std())))[1]["loss/policy"]


@pytest.mark.unit
def test_several_epochs_on_a_fixed_batch_lower_the_surrogate(compose):
    overrides = ["algo=appo", "algo.minibatches=2", "algo.lr=1e-3", "algo.gae_lambda=0.95", *FP32]
    batch = rollout(compose(overrides))
    torch_batch = batch.to_torch()
    before = surrogate(trained(compose(overrides), batch, updates=0), torch_batch)
    after = {epochs: surrogate(trained(compose([*overrides, f"algo.epochs={epochs}"]), batch), torch_batch)
             for epochs in (1, 4)}
    assert before == pytest.approx(0.0, abs=1e-4)  # π = μ: −mean of normalised advantages
    assert after[4] < after[1] < before, (before, after)


def _scripted_batch(reward):
    """One environment, two steps, rewards (reward, 0), zero values: with γ = .5 and λ = .95 the GAE
    return targets are (reward, 0), their mean reward / 2."""
    obs = {"rgb": torch.zeros(3, 1, 64, 64, 3, dtype=torch.uint8)}
    u = make_unroll(obs, torch.zeros(3, 1, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.bool),
                    torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
                    rewards=torch.tensor([[reward], [0.0]]))
    u.values = {"baseline": torch.zeros(3, 1)}
    return u


@pytest.mark.unit
def test_ucb_drac_credits_the_return_target_of_the_next_batch_to_the_arm_used_before():
    mix = RewardMix(discount=0.5, clip="none")
    assert batch_return_target(_scripted_batch(3.0), None, mix, 0.95) == pytest.approx(1.5)
    term = DracTerm("ucb", coef=0.1, ucb_exploration_coef=0.1, ucb_window=10, return_lambda=0.95, mix=mix,
                    device=CPU, seed=0)
    # First update: nothing to credit, all scores 0 → the first arm (crop).
    assert term.start_update(_scripted_batch(3.0), None, 0)["drac/arm"] == 0
    # Crop is credited with the return of the batch after its update (.5, not the 1.5 before it):
    # .5 + .1·sqrt(ln 2 / 1) / sqrt(2) beats the untried arms' .1·sqrt(ln 2) → crop again.
    metrics = term.start_update(_scripted_batch(1.0), None, 0)
    assert metrics["drac/q/crop"] == pytest.approx(0.5) and metrics["drac/arm"] == 0
    # Crop credited with −3: Q = −1.25 → the next untried arm.
    metrics = term.start_update(_scripted_batch(-6.0), None, 0)
    assert metrics["drac/q/crop"] == pytest.approx(-1.25) and term.arm == "random-conv"
    # random-conv credited with 0: .1·sqrt(ln 4 / 2) < grayscale's untried .1·sqrt(ln 4).
    metrics = term.start_update(_scripted_batch(0.0), None, 0)
    assert metrics["drac/q/random-conv"] == 0.0 and metrics["drac/arm"] == 2 and term.arm == "grayscale"

    restored = DracTerm("ucb", 0.1, 0.1, 10, 0.95, mix, CPU, seed=1)
    restored.load_state_dict(term.state_dict())
    assert restored.arm == "grayscale" and restored.ucb.scores() == term.ucb.scores()


@pytest.mark.unit
@pytest.mark.parametrize("overrides, message", [
    (["algo=appo", "algo.epochs=0"], "algo.epochs=0 must be >= 1"),
    (["algo=appo", "algo.minibatches=3"], r"algo.minibatches=3 .* choose one of \[1, 2, 4\]"),
    (["algo=appo", "runtime.learners=2", "algo.minibatches=4"], r"algo.minibatches=4 .* choose one of \[1, 2\]"),
    (["algo=appo", "algo.advantages=td"], r"algo.advantages='td' is not allowed; choose one of \['gae', 'vtrace'\]"),
    (["experiment=procgen_coinrun", "algo.drac.augmentation=blur"],
     r"algo.drac.augmentation='blur' is not allowed; choose one of \['none', 'ucb', 'crop', "),
    (["algo.drac.augmentation=crop"], "algo.drac.augmentation='crop' augments images: it needs env.family=procgen"),
    (["algo=appo", "algo.clip_ratio=0"], "algo.clip_ratio=0 must be > 0"),
])
def test_bad_appo_and_drac_settings_are_one_line_errors_before_any_worker(compose, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        train(compose(overrides), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.integration
def test_appo_with_e3b_trains_serially_and_logs_clip_fraction_kl_and_policy_lag(compose, tmp_path):
    summary = train(compose(["algo=appo", "bonus=e3b", "algo.epochs=2", "algo.minibatches=2",
                             "total_steps=640"]), tmp_path)
    assert summary["learner_steps"] == 640 // 64
    row = read_metrics(tmp_path)[-1]
    for key in ("policy/clip_fraction", "policy/kl", "learner/policy_lag", "loss/policy", "loss/baseline",
                "bonus/int_reward_mean"):
        assert key in row and row[key] == row[key], key
    assert 0.0 <= row["policy/clip_fraction"] <= 1.0 and row["policy/kl"] >= 0.0


@pytest.mark.integration
def test_appo_with_ucb_drac_trains_on_procgen_and_resumes_its_bandit(compose, tmp_path):
    overrides = ["experiment=procgen_coinrun", "algo=appo", "algo.drac.augmentation=ucb", "algo.minibatches=2",
                 "runtime.unroll_length=8", "runtime.learner_threads=1"]
    train(compose([*overrides, "total_steps=128"]), tmp_path)  # 4 updates of 4 × 8 steps
    ucb = load_checkpoint(latest_path(tmp_path))["learner"]["terms"]["drac"]["ucb"]
    assert ucb["total"] == 4  # N starts at 1; the updates after the first credited an arm
    assert sum(ucb["counts"]) == 8 + 3 and sum(len(r) for r in ucb["returns"]) == 3
    summary = train(compose([*overrides, "total_steps=256"]), tmp_path)
    assert summary["learner_steps"] == 8
    assert load_checkpoint(latest_path(tmp_path))["learner"]["terms"]["drac"]["ucb"]["total"] == 8
    row = read_metrics(tmp_path)[-1]
    for key in ("policy/clip_fraction", "policy/kl", "learner/policy_lag", "loss/drac", "drac/arm",
                "drac/policy_reg", "drac/q/crop"):
        assert key in row and row[key] == row[key], key


@pytest.mark.integration
def test_appo_trains_in_the_ray_runtime(compose, tmp_path):
    cfg = compose(["runtime=ray", "algo=appo", "algo.advantages=vtrace", "algo.normalize_returns=false",
                   "runtime.num_actors=2", "runtime.envs_per_actor=4", "runtime.batch_size=8", "algo.minibatches=2",
                   "total_steps=1024"])
    summary = train(cfg, tmp_path)
    assert summary["learner_steps"] == 1024 // 128
    assert sorted(summary["unrolls_per_actor"]) == ["0", "1"]
    row = read_metrics(tmp_path)[-1]
    assert row["learner/policy_lag"] >= 0 and 0.0 <= row["policy/clip_fraction"] <= 1.0



@pytest.mark.integration
@pytest.mark.parametrize("advantages", [["algo.advantages=vtrace", "algo.normalize_returns=false"],
                                        ["algo.advantages=gae", "algo.normalize_returns=true"]])
def test_two_appo_learners_equal_one(compose, advantages):
    """Shares of shuffled minibatches, advantage statistics all-reduced before the first chunk's loss
    (V-trace's from the current network), return statistics from the whole batch on every replica,
    means weighted by the minibatch's samples: two replicas make the single learner's update."""
    cfg = compose(["algo=appo", *advantages, "algo.epochs=2", "algo.minibatches=2", "algo.shuffle_minibatches=true",
                   "runtime.envs_per_actor=4", "runtime.num_actors=2", "runtime.batch_size=8",
                   "runtime.unroll_length=8", "runtime.learner_chunk=1", *FP32, *STEADY_ADAM])
    batch = Unroll.concat([rollout(cfg, i) for i in range(2)])
    single = trained(cfg, batch, updates=2)

    sharded = sharded_weights(cfg, batch)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(sharded[k]), v, rtol=1e-5, atol=1e-6)


@pytest.mark.unit
def test_motif_oni_preset_is_appo_with_vtrace_on_4096_sample_batches():
    from rlzoo.config import load_config, validate

    cfg = load_config(["experiment=nethack_appo_motif"])
    validate(cfg)
    assert cfg.algo.name == "appo" and cfg.algo.advantages == "vtrace"
    assert cfg.runtime.batch_size * cfg.runtime.unroll_length == 4096
    assert (cfg.algo.epochs, cfg.algo.minibatches, cfg.algo.clip_ratio, cfg.algo.clip_value) == (1, 1, 0.1, 1.0)
    assert (cfg.algo.entropy_cost, cfg.algo.baseline_cost, cfg.algo.grad_norm_clip) == (0.003, 0.5, 4.0)
    assert (cfg.algo.optimizer, cfg.algo.lr, cfg.algo.eps, cfg.algo.discount) == ("adam", 1e-4, 1e-6, 0.99)
