"""The calibrated confidence (job.training.calibrate): a temperature that makes the top probability mean the share of
answers that are right."""

import pytest
import torch
import torch.nn.functional as F

from job.training.calibrate import calibrate, calibration_error, coverage_accuracy, fit_temperature


def answers_of_a_model_whose_temperature_is(temperature: float, n: int = 20000, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): the model is right exactly as often as that
    calibrated probability says."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=generator) * 4
    labels = torch.multinomial(F.softmax(logits / temperature, dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_is_the_one_the_answers_follow(temperature):
    logits, labels = answers_of_a_model_whose_temperature_is(temperature)
    assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.06)


def test_an_overconfident_model_is_calibrated_on_pictures_the_fit_never_saw(monkeypatch):
    import job.training.calibrate

    logits, labels = answers_of_a_model_whose_temperature_is(2.5)
    fitted_on = []

    def fit(*arguments):
        fitted_on.append(arguments[0])
        return fit_temperature(*arguments)

    monkeypatch.setattr(job.training.calibrate, "fit_temperature", fit)
    calibration = calibrate(logits, labels, min_confidence=0.9)
    (seen,) = fitted_on
    assert torch.equal(seen, logits[0::2])  # the even-indexed images only; every figure is of the odd ones
    assert calibration.fitted and (calibration.fitted_on, calibration.measured_on) == (10000, 10000)
    assert calibration.error_before > 0.1 and calibration.error < 0.02, calibration
    shares = [coverage for coverage, _ in calibration.coverage_accuracy]
    accuracies = [accuracy for _, accuracy in calibration.coverage_accuracy]
    assert shares == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0]
    assert accuracies[0] > accuracies[-1]  # the surest answers are the rightest
    assert 0 < calibration.unsure_share < 1 and calibration.accuracy_when_sure > accuracies[-1]


def test_too_few_wrong_answers_to_fit_on_leave_the_temperature_at_1_and_say_so():
    logits = torch.randn(200, 10) * 4
    labels = logits.argmax(1)  # a model right on every image: it would be fitted ever sharper
    calibration = calibrate(logits, labels, min_confidence=0.9)
    assert calibration.temperature == 1.0 and not calibration.fitted and calibration.errors_fitted_on == 0
    assert calibrate(logits[:1], labels[:1], min_confidence=0.9) is None  # LENET_TEST_LIMIT=1: nothing to measure
    every_answer_unsure = calibrate(logits, labels, min_confidence=1.0)
    assert every_answer_unsure.unsure_share > 0.9 and every_answer_unsure.accuracy_when_sure in (None, 1.0)


def test_the_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    confidence = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([True, True, True, False, True, True])
    # bin of 0.95: 4 of 6 pictures, 75 % right; bin of 0.55: 2 of 6, all right
    assert calibration_error(confidence, correct) == pytest.approx(4 / 6 * 0.20 + 2 / 6 * 0.45)
    assert calibration_error(torch.ones(4), torch.ones(4, dtype=torch.bool)) == 0


def test_coverage_accuracy_answers_the_surest_first():
    confidence = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.35])
    correct = torch.tensor([True, False, True, False, True, True, True, True, False, True])
    points = dict(coverage_accuracy(confidence.log(), correct))
    assert points[0.5] == 0.8 and points[0.8] == 7 / 8 and points[1.0] == 0.7
