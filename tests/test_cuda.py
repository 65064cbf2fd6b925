"""The learner on a CUDA GPU: the same update as on the CPU, bf16 autocast, pinned host-to-device
copies, and NCCL replicas equal to one learner. Skipped where there is no GPU."""
import numpy as np
import pytest
import torch

from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.learner import Learner
from rlzoo.unroll import synthetic_unroll
from replicas import sharded_weights

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]

SMALL = ["runtime=serial", "runtime.envs_per_actor=8", "runtime.batch_size=8", "runtime.unroll_length=16",
         "algo.lr_decay=none", "model.lstm_size=64"]


def learner_and_batch(device, *overrides):
    cfg = load_config([*SMALL, *overrides])
    spec = env_spec(cfg.env)
    batch = synthetic_unroll(spec.obs_space, spec.num_actions, 16, 8, lstm_size=64)
    return Learner(cfg, spec, 8, torch.device(device)), batch


def test_an_update_on_the_gpu_equals_the_cpu_update():
    cpu, batch = learner_and_batch("cpu", "runtime.precision=fp32")
    gpu, _ = learner_and_batch("cuda", "runtime.precision=fp32")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_metrics, gpu_metrics = cpu.update(batch, 0), gpu.update(batch, 0)
    assert gpu_metrics["loss/total"] == pytest.approx(cpu_metrics["loss/total"], rel=1e-3)
    for (name, a), b in zip(cpu.model.state_dict().items(), gpu.model.state_dict().values()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_on_the_gpu_keeps_float32_weights_and_tracks_the_fp32_loss():
    full, batch = learner_and_batch("cuda", "runtime.precision=fp32")
    low, _ = learner_and_batch("cuda", "runtime.precision=bf16")
    assert low.compute_dtype == torch.bfloat16
    full_loss, low_loss = full.update(batch, 0)["loss/baseline"], low.update(batch, 0)["loss/baseline"]
    assert all(p.dtype == torch.float32 and p.is_cuda for p in low.model.parameters())
    assert low_loss == pytest.approx(full_loss, rel=0.1)


def test_batches_reach_the_gpu_through_pinned_memory_unchanged():
    spec = env_spec(load_config(SMALL).env)
    batch = synthetic_unroll(spec.obs_space, spec.num_actions, 4, 2)
    on_gpu = batch.to_torch("cuda")
    torch.cuda.synchronize()
    assert on_gpu.obs["glyphs"].is_cuda and on_gpu.obs["glyphs"].dtype == torch.int16
    np.testing.assert_array_equal(on_gpu.actions.cpu().numpy(), batch.actions)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL replicas need two CUDA GPUs")
def test_two_nccl_replicas_equal_one_learner():
    single, batch = learner_and_batch("cuda:0", "runtime.precision=fp32")
    single.update(batch, 0)
    cfg = load_config([*SMALL, "runtime.precision=fp32", "runtime.learners=2"])
    sharded = sharded_weights(cfg, batch, updates=1, device_type="cuda")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(sharded[name]), value.cpu(), rtol=1e-4, atol=1e-5)
