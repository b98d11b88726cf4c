import json
from datetime import UTC, datetime

from conftest import ROOT
from job.outcome.report import SCHEMA_VERSION, Epoch, Report, VariantResult, read_report, schema_json, write_report


def sample_report() -> Report:
    epoch = Epoch(epoch=1, train_accuracy=0.9, train_loss=0.3, test_accuracy=0.95, test_loss=0.2, seconds=1.5,
                  learning_rate=0.01)
    variant = VariantResult(variant="plain", parameters=61706, epochs=[epoch], final_test_accuracy=0.95,
                            final_test_loss=0.2, final_train_accuracy=0.9, final_train_loss=0.3,
                            training_seconds=1.5, met_accuracy_gate=False, confusion_matrix=[[0] * 10] * 10)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Report(status="accuracy_gate_failed", exit_code=4, run_id="r", started_at=now, finished_at=now,
                  elapsed_seconds=0.0, versions={"torch": "x"}, settings={"epochs": 1}, recipe={"name": "seed"},
                  min_test_accuracy=0.98, accuracy_gate_passed=False, variants=[variant])


def test_report_round_trips_through_json(tmp_path):
    report = sample_report()
    path = write_report(report, tmp_path)
    assert read_report(path) == report
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["started_at"] == "2026-01-02T03:04:05Z"
    assert json.loads((tmp_path / "report.schema.json").read_text())["title"] == "Report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.schema.json"]


def test_schema_in_docs_matches_the_models():
    assert (ROOT / "docs" / "report.schema.json").read_text() == schema_json(), \
        "regenerate: python -c 'from job.outcome.report import schema_json; print(schema_json(), end=\"\")' " \
        "> docs/report.schema.json"


def test_unknown_fields_are_rejected(tmp_path):
    raw = json.loads(sample_report().model_dump_json())
    raw["accuracy"] = 1.0
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))
    try:
        read_report(path)
    except ValueError as error:
        assert "accuracy" in str(error)
    else:
        raise AssertionError("an unknown field was accepted")
