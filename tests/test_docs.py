"""The documents and the layout agree with the code: the exit-status and settings tables, and which package imports
which."""

from __future__ import annotations

import ast
import re
import subprocess
import typing
from pathlib import Path

import pytest

from conftest import TINY, job_env
from job import settings
from job.outcome import status
from job.outcome.report import Status

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_and_the_failure_modes_hold_the_exit_status_table_of_the_code():
    table = status.markdown_table()
    for document in ("README.md", "docs/failure-modes.md"):
        assert table in (ROOT / document).read_text(), \
            f"{document}: paste the output of `python -m job.outcome.status` as its exit-status table"


def test_the_settings_document_holds_the_settings_table_of_the_code():
    assert settings.markdown_table() in (ROOT / "docs/settings.md").read_text(), \
        "docs/settings.md: paste the output of `python -m job.settings` as its settings table"


def test_every_exit_status_is_distinct_and_names_a_report_status():
    codes = [s.code for s in status.STATUSES]
    assert len(codes) == len(set(codes))
    assert {s.report_status for s in status.STATUSES} - {None} == set(typing.get_args(Status))


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / ("client/lenet_client" if package == "lenet_client" else package)).glob("*.py"))


def test_the_import_graph_runs_one_way_job_export_client():
    """job uses export (formats, parity) and the client (contract, preprocessing, atomic files); export uses the
    client; the client, which downstream apps install alone, uses neither, nor torch."""
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & forbidden)
                 for package, forbidden in (("export", {"job"}), ("lenet_client", {"job", "export", "torch",
                                                                                   "torchvision", "pydantic"}))
                 for p in modules(package) if imported_packages(p) & forbidden}
    assert offenders == {}


def test_the_command_line_imports_no_torch_before_the_worker_server_starts():
    """job.preflight starts the server the variants' workers fork from before torch is imported, so that its
    imports (seconds) overlap the job's own: an import of torch at the top of a module job.cli loads puts them one
    after the other (the fixed cost was 1.24x once)."""
    import subprocess
    import sys

    code = "import sys, job.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_readme_is_read_in_five_minutes():
    """What it is, the two commands, what a run writes, the three uses and the tables; the rest is in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail to docs/"


@pytest.mark.slow
def test_the_readmes_command_for_the_job_ends_with_the_jobs_own_exit_status(real_data_dir, tmp_path):
    """A person and a scheduler read the documented status from the README's command: through make, every failure
    would be make's 2, which the table defines as a bad setting. A missed accuracy gate must read 4."""
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    command = block.splitlines()[0].split("  #")[0].strip()
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=job_env(tmp_path, real_data_dir, **(TINY | {"min_test_accuracy": 1.0})))
    assert done.returncode == status.ACCURACY_GATE.code, (command, done.stderr[-2000:])
    assert "below LENET_MIN_TEST_ACCURACY=1.0" in done.stderr



def heading_anchors(document: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", document.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_every_link_to_a_section_of_a_document_names_a_heading_it_has():
    documents = [ROOT / "README.md", ROOT / "client" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", document.read_text()):
            linked = (document.parent / target).resolve() if target else document
            if linked.suffix == ".md" and (not linked.is_file() or anchor not in heading_anchors(linked)):
                broken.append(f"{document.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, broken
