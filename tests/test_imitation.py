"""Behavioural cloning, kickstarting and coefficient schedules against hand-computed values."""
import math

import pytest
import torch

from rlzoo.algos.imitation import behavioural_cloning_loss, coefficient_schedule, kickstarting_loss

pytestmark = pytest.mark.unit

# One step, two actions: π = softmax([0, ln 3]) = (1/4, 3/4).
STUDENT = torch.tensor([[[0.0, math.log(3.0)]]])
UNIFORM = torch.zeros(1, 1, 2)


def test_behavioural_cloning_is_the_negative_log_likelihood_of_valid_actions():
    logits = STUDENT.expand(2, 1, 2)  # [T=2, B=1, A=2]
    actions = torch.tensor([[1], [0]])
    both = torch.tensor([[True], [True]])
    assert behavioural_cloning_loss(logits, actions, both).item() == pytest.approx(math.log(4 / 3) + math.log(4))
    assert behavioural_cloning_loss(logits, actions, both, "mean").item() == pytest.approx(
        (math.log(4 / 3) + math.log(4)) / 2
    )
    only_first = torch.tensor([[True], [False]])
    assert behavioural_cloning_loss(logits, actions, only_first).item() == pytest.approx(math.log(4 / 3))
    assert behavioural_cloning_loss(logits, actions, only_first, "mean").item() == pytest.approx(math.log(4 / 3))


def test_an_invalid_step_adds_nothing_even_when_the_policy_rules_its_action_out():
    logits = torch.tensor([[[0.0, -math.inf]], [[0.0, 0.0]]], requires_grad=True)
    actions = torch.tensor([[1], [1]])
    loss = behavioural_cloning_loss(logits, actions, torch.tensor([[False], [True]]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))
    assert torch.isfinite(logits.grad).all()


def test_no_valid_step_gives_zero_not_nan():
    loss = behavioural_cloning_loss(STUDENT, torch.tensor([[1]]), torch.tensor([[False]]), "mean")
    assert loss.item() == 0.0


def test_kickstarting_kl_and_cross_entropy_by_hand():
    # Teacher (1/2, 1/2), student (1/4, 3/4):
    # KL = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3); H(teacher, student) = KL + ln 2.
    kl = kickstarting_loss(STUDENT, UNIFORM, kind="kl")
    cross_entropy = kickstarting_loss(STUDENT, UNIFORM, kind="cross_entropy")
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3))
    assert cross_entropy.item() == pytest.approx(0.5 * math.log(4 / 3) + math.log(2))


def test_kickstarting_kl_is_zero_for_the_teacher_itself_and_both_kinds_give_the_same_gradient():
    assert kickstarting_loss(STUDENT, STUDENT).item() == pytest.approx(0.0, abs=1e-7)
    grads = []
    for kind in ("kl", "cross_entropy"):
        student = STUDENT.clone().requires_grad_()
        teacher = UNIFORM.clone().requires_grad_()
        kickstarting_loss(student, teacher, kind=kind).backward()
        assert teacher.grad is None  # the teacher is not trained by this loss
        grads.append(student.grad)
    # d/dlogits H(p_teacher, softmax(logits)) = softmax(logits) − p_teacher = (1/4 − 1/2, 3/4 − 1/2).
    assert torch.allclose(grads[0], grads[1])
    assert torch.allclose(grads[0], torch.tensor([[[-0.25, 0.25]]]))


def test_kickstarting_mask_and_mean():
    student = torch.cat([STUDENT, UNIFORM])  # [T=2, B=1, A=2]
    teacher = torch.cat([UNIFORM, UNIFORM])
    mask = torch.tensor([[True], [False]])
    assert kickstarting_loss(student, teacher, mask).item() == pytest.approx(0.5 * math.log(4 / 3))
    assert kickstarting_loss(student, teacher, reduction="mean").item() == pytest.approx(0.25 * math.log(4 / 3))


@pytest.mark.parametrize(
    "kind, step, final, expected",
    [
        ("constant", 10_000, 0.0, 2.0),
        ("linear", 0, 0.0, 2.0),
        ("linear", 25, 0.0, 1.5),  # 2 · (1 − 25/100)
        ("linear", 100, 0.0, 0.0),
        ("linear", 500, 0.0, 0.0),  # stays at the final value
        ("linear", 50, 0.2, 1.1),  # 2 + (0.2 − 2) · 1/2
        ("exponential", 100, 0.0, 1.0),  # one half-life
        ("exponential", 300, 0.0, 0.25),  # 2 · 2^−3
        ("exponential", 100, 0.4, 1.2),  # 0.4 + 1.6 / 2
    ],
)
def test_coefficient_schedules(kind, step, final, expected):
    assert coefficient_schedule(kind, 2.0, step, decay_steps=100, final=final) == pytest.approx(expected)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: coefficient_schedule("cosine", 1.0, 0, 10), "schedule='cosine'"),
        (lambda: coefficient_schedule("linear", 1.0, 0, 0), "decay_steps=0"),
        (lambda: coefficient_schedule("linear", 1.0, -1, 10), "step=-1"),
        (lambda: kickstarting_loss(STUDENT, UNIFORM, kind="js"), "kind='js'"),
        (lambda: behavioural_cloning_loss(STUDENT, torch.tensor([[1]]), torch.tensor([[True]]), "max"),
         "reduction='max'"),
    ],
)
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
