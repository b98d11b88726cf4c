import pytest
import torch
from torch import nn

from job.model import LeNet, build_model, parameter_count


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
