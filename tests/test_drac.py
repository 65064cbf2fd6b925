"""DrAC: the augmentations on hand-made images, the regularisers, and the UCB bandit by hand."""
import math

import pytest
import torch

from rlzoo.algos import augmentations as aug
from rlzoo.algos.drac import UCBAugmentationSelector, drac_loss, policy_regulariser, value_regulariser

pytestmark = pytest.mark.unit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def procgen_batch(n=8, device="cpu", seed=0):
    return torch.randint(0, 256, (n, 64, 64, 3), generator=gen(seed), dtype=torch.uint8).to(device)


# --- every augmentation -------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(aug.AUGMENTATIONS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augmentation_keeps_shape_dtype_device_and_is_reproducible(name, dtype, device):
    x = procgen_batch(device=device)
    if dtype != torch.uint8:
        x = x.to(dtype) / 255
    fn = aug.get_augmentation(name)
    out = fn(x, gen(1, device))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(fn(x, gen(1, device)), out, rtol=0, atol=0)
    if name != "random-conv" and dtype != torch.uint8:
        assert out.min() >= 0 and out.max() <= 1
    if name != "grayscale":
        assert not torch.equal(fn(x, gen(2, device)), out)  # the generator drives the randomness
    assert not torch.equal(out, x)


def test_registry_rejects_unknown_names_and_lists_the_allowed():
    with pytest.raises(ValueError, match="'blur' is not one of: crop, random-conv, .*color-jitter"):
        aug.get_augmentation("blur")


def test_bad_images_are_rejected():
    g = gen()
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        aug.crop(torch.zeros(64, 64, 3, dtype=torch.uint8), g)
    with pytest.raises(ValueError, match="RGB"):
        aug.grayscale(torch.zeros(2, 8, 8, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="square"):
        aug.rotate(torch.zeros(2, 8, 6, 3, dtype=torch.uint8), g)
    with pytest.raises(ValueError, match="uint8 or floating"):
        aug.flip(torch.zeros(2, 8, 8, 3, dtype=torch.int32), g)


# --- deterministic cores against hand-made images -----------------------------------------------


def image(rows):
    """[1, H, W, 1] uint8 image from a list of rows."""
    return torch.tensor(rows, dtype=torch.uint8).view(1, len(rows), len(rows[0]), 1)


def test_crop_at_replicates_the_border():
    x = image([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    up_left = aug.crop_at(x, torch.tensor([0]), torch.tensor([0]), pad=1)  # window starts in the padding
    assert up_left[0, ..., 0].tolist() == [[1, 1, 2], [1, 1, 2], [4, 4, 5]]
    down_right = aug.crop_at(x, torch.tensor([2]), torch.tensor([2]), pad=1)
    assert down_right[0, ..., 0].tolist() == [[5, 6, 6], [8, 9, 9], [8, 9, 9]]
    assert torch.equal(aug.crop_at(x, torch.tensor([1]), torch.tensor([1]), pad=1), x)


def test_random_crop_shifts_by_at_most_the_padding():
    # Channel 0 holds the row index, channel 1 the column index: the crop's shift can be read back.
    n = 256
    rows = torch.arange(64).view(1, 64, 1).expand(n, 64, 64)
    cols = torch.arange(64).view(1, 1, 64).expand(n, 64, 64)
    x = torch.stack([rows, cols, torch.zeros_like(rows)], dim=-1).to(torch.uint8)
    out = aug.crop(x, gen()).long()
    dy, dx = out[:, 32, 32, 0] - 32, out[:, 32, 32, 1] - 32
    assert dy.min() == -12 and dy.max() == 12 and dx.min() == -12 and dx.max() == 12
    expected_rows = (torch.arange(64).view(1, 64) + dy.view(n, 1)).clamp(0, 63)
    assert torch.equal(out[:, :, 0, 0], expected_rows)


def test_flip_where_turns_chosen_images_upside_down():
    x = torch.cat([image([[1, 2], [3, 4], [5, 6]]), image([[1, 2], [3, 4], [5, 6]])])
    out = aug.flip_where(x, torch.tensor([True, False]))
    assert out[0, ..., 0].tolist() == [[5, 6], [3, 4], [1, 2]]
    assert out[1, ..., 0].tolist() == [[1, 2], [3, 4], [5, 6]]


def test_rotate_by_quarter_turns_counter_clockwise():
    x = image([[1, 2], [3, 4]]).expand(4, 2, 2, 1)
    out = aug.rotate_by(x, torch.tensor([0, 1, 2, 3]))[..., 0].tolist()
    assert out == [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]


def test_grayscale_is_bt601_luma_in_every_channel():
    x = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=torch.uint8).view(1, 2, 2, 3)
    out = aug.grayscale(x).view(4, 3)
    # .299·255 = 76.2, .587·255 = 149.7, .114·255 = 29.1, .299·10 + .587·20 + .114·30 = 18.15
    assert out.tolist() == [[76] * 3, [150] * 3, [29] * 3, [18] * 3]


def test_cutout_box_fills_the_box_and_ignores_what_falls_outside():
    x = torch.ones(2, 4, 5, 1, dtype=torch.uint8)
    out = aug.cutout_box(x, top=torch.tensor([1, 3]), left=torch.tensor([2, 3]), height=torch.tensor([2, 3]),
                         width=torch.tensor([3, 4]), fill=torch.tensor([[0], [7]]))
    assert out[0, ..., 0].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert out[1, ..., 0].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 7, 7]]


@pytest.mark.parametrize("name", ["cutout", "cutout-color"])
def test_cutout_boxes_are_placed_as_in_drac(name):
    """A box of height h and width w in [7, 21] starts at row 12 + h and column 24 + w, cut at the edge."""
    n = 200
    x = torch.full((n, 64, 64, 3), 255, dtype=torch.uint8)
    out = aug.get_augmentation(name)(x, gen())
    changed = (out != 255).any(-1)
    heights, widths = set(), set()
    for i in range(n):
        rows = changed[i].any(1).nonzero().flatten()
        cols = changed[i].any(0).nonzero().flatten()
        if len(rows) == 0:  # a cutout-color box drew white: nothing to see
            assert name == "cutout-color"
            continue
        top, h = rows[0].item(), len(rows)
        left, visible_w = cols[0].item(), len(cols)
        w = left - 24
        assert top == 12 + h and 7 <= h <= 21 and 7 <= w <= 21
        assert visible_w == min(w, 64 - left)
        assert changed[i].sum() == h * visible_w  # one solid rectangle
        heights.add(h)
        widths.add(w)
        if name == "cutout":
            assert torch.all(out[i][changed[i]] == 0)
        else:
            assert torch.all(out[i][changed[i]] == out[i, top, left])  # one colour per box
    assert heights == set(range(7, 22)) and widths == set(range(7, 22))


def test_random_conv_draws_a_xavier_kernel_per_image():
    # A unit impulse at one pixel of channel 0 prints kernel weights (for that input channel) around it.
    n = 512
    x = torch.zeros(n, 8, 8, 3)
    x[:, 4, 4, 0] = 1.0
    out = aug.random_conv(x, gen())
    weights = out[:, 3:6, 3:6, :]
    assert torch.all(out[:, :3] == 0) and torch.all(out[:, 6:] == 0)
    assert weights.std().item() == pytest.approx(math.sqrt(1 / 27), rel=0.05)  # sqrt(2 / (27 + 27))
    assert weights.mean().abs().item() < 0.01
    assert not torch.equal(weights[0], weights[1])
    # Linear in the image for a fixed kernel (same generator state): float images are not clamped.
    a, b = torch.rand(4, 8, 8, 3, generator=gen(1)), torch.rand(4, 8, 8, 3, generator=gen(2))
    torch.testing.assert_close(aug.random_conv(a + b, gen(3)), aug.random_conv(a, gen(3)) + aug.random_conv(b, gen(3)))


def test_hsv_conversion_hand_values_and_round_trip():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0], [1.0, 0.0, 0.5]])
    hsv = aug.rgb_to_hsv(rgb.T).T  # the conversions take channels first
    expected = [[0.0, 1.0, 1.0], [0.5, 1.0, 0.5], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0], [11 / 12, 1.0, 1.0]]
    torch.testing.assert_close(hsv, torch.tensor(expected))
    colours = torch.rand(3, 1000, generator=gen())
    torch.testing.assert_close(aug.hsv_to_rgb(aug.rgb_to_hsv(colours)), colours, rtol=0, atol=1e-6)


def jitter(y, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, contrast_first=True):
    n = y.shape[0]
    return aug.jitter_with(y, torch.full((n,), brightness), torch.full((n,), contrast),
                           torch.full((n,), saturation), torch.full((n,), hue), contrast_first)


def test_jitter_with_hand_values():
    y = torch.rand(2, 4, 4, 3, generator=gen())
    for first in (True, False):
        torch.testing.assert_close(jitter(y, contrast_first=first), y, rtol=0, atol=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 1, 3)
    # A third of a turn of hue takes red to green; the paper's code scales the factor by 255/360.
    torch.testing.assert_close(jitter(red, hue=(1 / 3) / aug.HUE_SCALE), torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 1, 3))
    orange = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(jitter(orange, brightness=0.5), torch.tensor([0.5, 0.25, 0.0]).view(1, 1, 1, 3))
    torch.testing.assert_close(jitter(orange, saturation=0.0), torch.ones(1, 1, 1, 3))
    two = torch.tensor([0.2, 0.6]).view(1, 1, 2, 1).expand(1, 1, 2, 3)
    # Contrast 0.5 about each channel's mean 0.4.
    torch.testing.assert_close(jitter(two, contrast=0.5), torch.tensor([0.3, 0.5]).view(1, 1, 2, 1).expand(1, 1, 2, 3))


def test_color_jitter_factors_stay_in_drac_ranges():
    # Brightness alone is visible on gray pixels (no hue or saturation to change); V × [0.6, 1.4].
    x = torch.full((400, 1, 1, 3), 0.5)
    out = aug.color_jitter(x, gen())
    assert torch.all(out[..., 0] == out[..., 1])  # gray stays gray: contrast of a flat image is a no-op
    assert out.min().item() == pytest.approx(0.3, abs=0.01) and out.max().item() == pytest.approx(0.7, abs=0.01)


# --- DrAC's regularisers ------------------------------------------------------------------------


def test_policy_regulariser_is_kl_from_the_clean_policy_with_gradient_to_the_augmented_branch():
    clean = torch.tensor([[0.5, 0.5]]).log().requires_grad_()
    augmented = torch.tensor([[0.75, 0.25]]).log().requires_grad_()
    g_pi = policy_regulariser(augmented, clean)
    assert g_pi.item() == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    g_pi.backward()
    assert clean.grad is None
    torch.testing.assert_close(augmented.grad, torch.tensor([[0.25, -0.25]]))  # softmax(aug) − π_clean
    assert policy_regulariser(clean, clean).item() == pytest.approx(0.0, abs=1e-7)


def test_value_regulariser_and_drac_loss_hand_values():
    values = torch.tensor([0.0, 4.0], requires_grad=True)
    aug_values = torch.tensor([1.0, 2.0], requires_grad=True)
    assert value_regulariser(aug_values, values).item() == pytest.approx((1.0 + 4.0) / 2)
    logits = torch.zeros(2, 3)
    loss = drac_loss(logits + torch.tensor([1.0, 0.0, 0.0]), logits, aug_values, values, coef=0.1)
    kl = (2 * (1 / 3) * math.log((1 / 3) * (math.e + 2)) + (1 / 3) * math.log((1 / 3) * (math.e + 2) / math.e))
    assert loss.item() == pytest.approx(0.1 * (kl + 2.5), rel=1e-5)
    loss.backward()
    assert values.grad is None
    torch.testing.assert_close(aug_values.grad, 0.1 * torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="alpha_r"):
        drac_loss(logits, logits, aug_values, values, coef=-0.1)


# --- UCB-DrAC's bandit --------------------------------------------------------------------------


def test_ucb_choices_follow_the_formula_on_a_scripted_run():
    arms = ["crop", "flip", "rotate"]
    ucb = UCBAugmentationSelector(arms, exploration_coef=2.0, window=2)
    # N = 1, N(f) = 1: log N = 0, every score is 0, the first arm wins the tie.
    assert ucb.select() == "crop"
    ucb.update("crop", 0.2)
    # N = 2; crop: .2 + 2·sqrt(ln 2 / 2) = 1.377; flip, rotate: 0 + 2·sqrt(ln 2) = 1.665.
    assert ucb.scores() == pytest.approx([0.2 + 2 * math.sqrt(math.log(2) / 2), 2 * math.sqrt(math.log(2)),
                                          2 * math.sqrt(math.log(2))])
    assert ucb.select() == "flip"
    ucb.update("flip", 1.0)
    # N = 3; crop: .2 + 2·sqrt(ln 3 / 2) = 1.682; flip: 1 + 1.482 = 2.482; rotate: 2·sqrt(ln 3) = 2.096.
    assert ucb.select() == "flip"
    ucb.update("flip", 0.0)
    # N = 4; flip: mean(1, 0) + 2·sqrt(ln 4 / 3) = 1.859; rotate: 2·sqrt(ln 4) = 2.355.
    assert ucb.select() == "rotate"

    # The rest of a scripted run against a plain transcription of the formula.
    script = {"crop": [0.2, 0.1, 0.4, 0.3], "flip": [1.0, 0.0, 2.0, 1.5], "rotate": [0.5, 0.6, 0.7, 0.8]}
    counts, total, history = {"crop": 2, "flip": 3, "rotate": 1}, 4, {"crop": [0.2], "flip": [1.0, 0.0], "rotate": []}
    for step in range(12):
        expected = max(arms, key=lambda a: (sum(history[a][-2:]) / len(history[a][-2:]) if history[a] else 0.0)
                       + 2.0 * math.sqrt(math.log(total) / counts[a]))
        assert ucb.select() == expected
        r = script[expected][step % 4]
        ucb.update(expected, r)
        history[expected].append(r)
        counts[expected] += 1
        total += 1


def test_ucb_window_keeps_only_the_last_returns():
    ucb = UCBAugmentationSelector(["a", "b"], exploration_coef=0.1, window=2)
    for r in (10.0, 0.0, 2.0):
        ucb.update("a", r)
    assert ucb.q_values() == [1.0, 0.0]  # mean(0, 2), the 10 fell out of the window


def test_ucb_state_dict_round_trip():
    arms = ["crop", "cutout"]
    ucb = UCBAugmentationSelector(arms, exploration_coef=0.1, window=3)
    for arm, r in [("crop", 1.0), ("cutout", 2.0), ("crop", 3.0), ("crop", 4.0), ("crop", 5.0)]:
        ucb.update(arm, r)
    restored = UCBAugmentationSelector(arms, exploration_coef=0.1, window=3)
    restored.load_state_dict(ucb.state_dict())
    assert restored.scores() == ucb.scores() and restored.select() == ucb.select()
    assert restored.q_values() == [4.0, 2.0]
    restored.update("crop", 100.0)
    assert list(restored.returns[0]) == [4.0, 5.0, 100.0]  # the window survived the round trip
    with pytest.raises(ValueError, match="differ"):
        UCBAugmentationSelector(["crop", "flip"], 0.1, 3).load_state_dict(ucb.state_dict())


def test_drac_term_resumes_the_bandit_and_the_augmentation_draws():
    from rlzoo.algos.drac import DracTerm
    from rlzoo.algos.rewards import RewardMix

    def term(seed):
        return DracTerm("ucb", 0.1, 0.1, 10, 0.95, RewardMix(), torch.device("cpu"), seed)

    frames = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    first = term(seed=1)
    first.arm = "crop"
    first.ucb.update("crop", 2.0)
    aug.get_augmentation("crop")(frames, first.generator)  # the generator moves on
    state = first.state_dict()
    expected = aug.get_augmentation("crop")(frames, first.generator)
    resumed = term(seed=2)
    resumed.load_state_dict(state)
    assert resumed.arm == "crop" and resumed.ucb.state_dict() == first.ucb.state_dict()
    assert torch.equal(aug.get_augmentation("crop")(frames, resumed.generator), expected)


@pytest.mark.parametrize("arms,coef,window,match", [
    (["a", "b"], -0.1, 10, "exploration_coef"),
    (["a", "b"], 0.1, 0, "window"),
    (["a", "b"], 0.1, 2.5, "window"),
    (["a", "a"], 0.1, 10, "distinct"),
    ([], 0.1, 10, "non-empty"),
])
def test_ucb_rejects_bad_settings(arms, coef, window, match):
    with pytest.raises(ValueError, match=match):
        UCBAugmentationSelector(arms, coef, window)


def test_ucb_rejects_unknown_arms_and_non_finite_returns():
    ucb = UCBAugmentationSelector(["a"], 0.1, 10)
    with pytest.raises(ValueError, match="'z' is not one of"):
        ucb.update("z", 1.0)
    with pytest.raises(ValueError, match="not finite"):
        ucb.update("a", float("nan"))
