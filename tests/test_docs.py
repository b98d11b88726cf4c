"""The documents and the layout agree with the code: the exit-status table, and which package imports which."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from job import status
from job.report import Status

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_and_the_failure_modes_hold_the_exit_status_table_of_the_code():
    table = status.markdown_table()
    for document in ("README.md", "docs/failure-modes.md"):
        assert table in (ROOT / document).read_text(), \
            f"{document}: paste the output of `python -m job.status` as its exit-status table"


def test_every_exit_status_is_distinct_and_names_a_report_status():
    codes = [s.code for s in status.STATUSES]
    assert len(codes) == len(set(codes))
    assert {s.report_status for s in status.STATUSES} - {"-"} == set(typing.get_args(Status))


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_export_does_not_import_job_except_its_command_line():
    """job uses export (formats, parity, contract); export knows nothing of training. Only the re-export CLI,
    a program on top of both, rebuilds a model with job.model and reads MNIST with job.data."""
    offenders = [p.name for p in (ROOT / "export").glob("*.py") if p.name != "__main__.py"
                 and "job" in imported_packages(p)]
    assert offenders == []


def test_torch_free_modules_stay_torch_free():
    """A slim downstream image has onnxruntime, numpy and Pillow only."""
    for name in ("__init__.py", "contract.py", "predict.py", "preprocess.py", "ink.py"):
        assert not {"torch", "job", "torchvision"} & imported_packages(ROOT / "export" / name), name


def test_no_module_of_the_job_or_export_is_over_250_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*(ROOT / "job").glob("*.py"), *(ROOT / "export").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 250}
    assert long == {}
