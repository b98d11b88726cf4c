import pytest
import torch
from torch import nn

from bench.tutorial import tutorial_model
from job.training.model import LeNet, MaxPool2x2, build_model, parameter_count


def test_plain_lenet_has_the_classic_61706_parameters():
    assert parameter_count(build_model("plain", dropout=0.5)) == 61_706


def test_conv1_padding_leaves_400_features_for_fc1():
    model = LeNet()
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 16, 5, 5)
    assert model.classifier[1].in_features == 16 * 5 * 5


@pytest.mark.parametrize("variant", ["plain", "bn_dropout"])
@pytest.mark.parametrize("batch", [1, 7])
def test_outputs_ten_logits_per_image(variant, batch):
    model = build_model(variant, dropout=0.5).eval()
    assert model(torch.rand(batch, 1, 28, 28)).shape == (batch, 10)


def test_bn_dropout_variant_normalizes_every_layer_but_the_last_and_drops_in_the_classifier():
    model = build_model("bn_dropout", dropout=0.3)
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(nn.BatchNorm2d) == 2 and kinds.count(nn.BatchNorm1d) == 2
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert parameter_count(model) == 61_706 + 2 * (6 + 16 + 120 + 84)


def test_bn_dropout_is_deterministic_in_eval_mode_only():
    torch.manual_seed(0)
    model = build_model("bn_dropout", dropout=0.5)
    x = torch.rand(16, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="allowed: plain, bn_dropout"):
        build_model("resnet", dropout=0.0)


@pytest.mark.parametrize("make_input", [
    lambda shape: torch.randn(shape),
    lambda shape: torch.relu(torch.randn(shape)),  # ties at zero in most windows
    lambda shape: torch.randint(0, 3, shape).float(),  # ties among positive values too
    lambda shape: torch.full(shape, 0.5),  # every window a four-way tie
], ids=["random", "relu", "small-integers", "constant"])
@pytest.mark.parametrize("shape", [(8, 6, 28, 28), (8, 16, 10, 10)])
def test_training_pooling_matches_max_pool2d_bit_for_bit(make_input, shape):
    torch.manual_seed(0)
    x = make_input(shape)
    fast_input, reference_input = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    fast = MaxPool2x2().train()(fast_input)
    assert type(fast.grad_fn).__name__ == "MaxPool2x2FunctionBackward"  # the fast path, not the fallback
    reference = nn.functional.max_pool2d(reference_input, 2)
    fast.backward(grad)
    reference.backward(grad)
    assert torch.equal(fast, reference)
    assert torch.equal(fast_input.grad, reference_input.grad)


@pytest.mark.parametrize("variant", ["plain", "bn_dropout"])
def test_training_gives_the_same_weights_as_the_tutorials_relu_then_max_pool2d(variant):
    torch.manual_seed(0)
    reference = tutorial_model(variant, dropout=0.25)
    fast = build_model(variant, dropout=0.25)
    fast.load_state_dict(reference.state_dict())  # pooling and ReLU hold no weights: the same keys
    assert [type(m) for m in reference.features if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d))] == \
        [nn.ReLU, nn.MaxPool2d] * 2
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (fast, reference)]
    for step in range(5):
        x = torch.full((32, 1, 28, 28), -0.4242)  # MNIST's standardized background: ties in every pooling window
        x[:, :, 6:22, 6:22] = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(step))
        for model, optimizer in zip((fast, reference), optimizers, strict=True):
            torch.manual_seed(step)  # the same dropout masks
            loss = nn.functional.cross_entropy(model(x), torch.arange(32) % 10)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, a), b in zip(fast.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("make_input", [
    lambda shape: torch.randn(shape),
    lambda shape: torch.relu(torch.randn(shape)),
    lambda shape: torch.full(shape, 0.5),
    lambda shape: torch.where(torch.rand(shape) < 0.01, float("nan"), torch.randn(shape)),
], ids=["random", "relu", "constant", "nan"])
@pytest.mark.parametrize("shape", [(8, 6, 28, 28), (8, 16, 10, 10)])
def test_pooling_under_inference_mode_gives_max_pool2d_s_values(make_input, shape, monkeypatch):
    torch.manual_seed(0)
    x = make_input(shape)
    reference = nn.functional.max_pool2d(x, 2)
    monkeypatch.setattr(nn.functional, "max_pool2d", None)  # the fast path, not the fallback
    with torch.inference_mode():
        fast = MaxPool2x2().eval()(x)
    assert torch.equal(fast.isnan(), reference.isnan())
    assert torch.equal(fast.nan_to_num(), reference.nan_to_num())


def test_pooling_outside_training_is_max_pool2d(monkeypatch):
    x = torch.randn(2, 6, 28, 28, requires_grad=True)
    assert type(MaxPool2x2().eval()(x).grad_fn).__name__ == "MaxPool2DWithIndicesBackward0"
    calls = []
    max_pool2d = nn.functional.max_pool2d
    monkeypatch.setattr(nn.functional, "max_pool2d", lambda *args: calls.append(args) or max_pool2d(*args))
    with torch.no_grad():  # not inference mode: what an exporter may trace under
        MaxPool2x2().eval()(x)
    assert len(calls) == 1
    odd = torch.randn(2, 6, 27, 27, requires_grad=True)  # odd sizes: max_pool2d drops the last row and column
    assert MaxPool2x2().train()(odd).shape == (2, 6, 13, 13)


def test_random_shift_moves_each_image_by_its_own_offset_and_fills_with_background():
    from job.training.augment import random_shift
    torch.manual_seed(0)
    images = torch.full((64, 1, 28, 28), -0.4242)
    images[:, :, 4:24, 4:24] += 3 * torch.rand(64, 1, 20, 20)  # ink is brighter than the background
    shifted = random_shift(images, 2, torch.Generator().manual_seed(5))
    offsets = torch.randint(0, 5, (2, 64, 1), generator=torch.Generator().manual_seed(5))  # the same draw
    padded = nn.functional.pad(images, (2, 2, 2, 2), value=-0.4242)
    assert shifted.shape == images.shape and shifted.is_contiguous()
    for i in range(64):
        row, col = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(shifted[i], padded[i, :, row:row + 28, col:col + 28]), i
    assert len({(int(r), int(c)) for r, c in zip(offsets[0], offsets[1], strict=True)}) > 10  # the offsets do vary


def some_digits(n: int = 256) -> torch.Tensor:
    """Standardized MNIST-like images: paper at (0 - 0.1307) / 0.3081, strokes of full ink with gray edges."""
    ink = torch.zeros(n, 1, 28, 28)
    ink[:, :, 6:22, 12:15] = 1.0
    ink[:, :, 6:9, 8:20] = 1.0
    ink[:, :, 5, 8:20] = 0.5
    return (ink - 0.1307) / 0.3081


def test_varied_images_keep_their_range_and_the_same_seed_varies_them_alike():
    from job.training.augment import random_shift, vary
    images = random_shift(some_digits(), 3, torch.Generator().manual_seed(0))  # 256 images, not all alike
    varied = vary(images, torch.Generator().manual_seed(3))
    assert varied.shape == images.shape
    assert varied.min() >= images.min() - 1e-5 and varied.max() <= images.max() + 1e-5
    assert torch.equal(varied, vary(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(varied, vary(images, torch.Generator().manual_seed(4)))
    changed = (varied - images).abs().flatten(1).amax(1) > 1e-4
    # Six windows of 12 % of the batch, overlapping by a quarter: about 57 % of the images change, the rest not.
    assert 0.45 < changed.float().mean() < 0.65
    assert torch.equal(varied[~changed], images[~changed])


def test_a_batch_of_a_few_images_is_still_varied():
    from job.training.augment import vary
    images = some_digits(3)
    assert not torch.equal(vary(images, torch.Generator().manual_seed(0)), images)
    constant = torch.zeros(4, 1, 28, 28)  # no ink at all: nothing to divide by, and nothing becomes NaN
    assert torch.isfinite(vary(constant, torch.Generator().manual_seed(0))).all()


@pytest.mark.parametrize("change, more_ink", [("thicker", True), ("thinner", False)])
def test_strokes_are_made_thicker_or_thinner_by_a_pixel(change, more_ink):
    from job.training import augment
    ink = (some_digits(1) + 0.1307 / 0.3081) * 0.3081  # back to 0-1
    result = getattr(augment, change)(ink)
    full = lambda image: int((image > 0.99).sum())  # noqa: E731
    columns = lambda image: int((image[0, 0, 15] > 0.99).sum())  # the vertical stroke, 3 px wide  # noqa: E731
    assert columns(result) == (5 if more_ink else 2)
    assert (full(result) > full(ink)) == more_ink


def test_blur_low_resolution_and_warp_keep_the_ink_about_where_it_was():
    from job.training import augment
    ink = (some_digits(8) + 0.1307 / 0.3081) * 0.3081
    generator = torch.Generator().manual_seed(1)
    for result in (augment.blurred(ink), augment.scanned_small(ink, generator), augment.warped(ink, generator)):
        assert result.shape == ink.shape and not torch.equal(result, ink)
        assert abs(float(result.sum() / ink.sum()) - 1) < 0.2  # ink moved and softened, not lost or made
        assert float(result[..., :2, :].abs().max()) < 0.05  # the paper two rows above the digit stays paper
