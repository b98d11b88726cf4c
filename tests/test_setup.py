"""`make setup` installs the torch build the machine can use (tools/torch_source.py)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import torch_source  # noqa: E402  (a script, run by make with the system's python3)


def never(index):
    raise AssertionError(f"{index} asked where the CPU build would not help")


def test_a_linux_machine_without_an_nvidia_driver_gets_the_cpu_only_build_when_its_index_answers():
    arguments, why = torch_source.choose("Linux", "x86_64", nvidia=False, reachable=lambda index: True)
    assert arguments == ["--extra-index-url", torch_source.CPU_INDEX]
    assert "CPU-only" in why


def test_where_the_cpu_index_cannot_be_reached_pypis_build_is_installed_and_the_line_says_so():
    arguments, why = torch_source.choose("Linux", "x86_64", nvidia=False, reachable=lambda index: False)
    assert arguments == []
    assert "cannot be reached" in why and "no NVIDIA driver" in why


@pytest.mark.parametrize(("system", "machine", "nvidia"), [("Linux", "x86_64", True), ("Darwin", "arm64", False),
                                                           ("Linux", "aarch64", False)])
def test_pypis_build_where_it_is_the_right_one(system, machine, nvidia):
    assert torch_source.choose(system, machine, nvidia, reachable=never)[0] == []


@pytest.mark.parametrize(("chosen", "expected"), [("", []), ("https://mirror.example/whl/cpu",
                                                               ["--extra-index-url", "https://mirror.example/whl/cpu"])])
def test_torch_index_url_decides_when_set(chosen, expected):
    assert torch_source.choose("Linux", "x86_64", False, reachable=never, chosen=chosen)[0] == expected


def test_make_setup_installs_with_the_chosen_source_and_says_which():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "torch_source.py")], capture_output=True, text=True,
                          env={"TORCH_INDEX_URL": "https://mirror.example/whl/cpu", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0
    assert done.stdout.split() == ["--extra-index-url", "https://mirror.example/whl/cpu"]
    assert done.stderr.startswith("torch: from https://mirror.example/whl/cpu")
    plan = subprocess.run(["make", "-n", "-B", "setup", "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True,
                          text=True).stdout
    assert re.search(r"torch_source=\$\(python3 tools/torch_source.py\) && \\\n\S*pip install -c constraints.txt "
                     r"\$torch_source ", plan), plan  # the install runs only once the source is chosen


@pytest.mark.parametrize("value", [" ", "not a url", "https://download.pytorch.org/whl/cpu --index-url http://x",
                                   "ftp://mirror/whl", "https://a\nb"])
def test_a_torch_index_url_that_is_not_one_address_stops_the_setup(value):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "torch_source.py")], capture_output=True, text=True,
                          env={"TORCH_INDEX_URL": value, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and done.stdout == "" and "allowed: http:// or https://" in done.stderr


@pytest.mark.parametrize(("page", "offered"), [(f"torch-{torch_source.pinned_torch()}+cpu-cp311-cp311-linux.whl", True),
                                               ("torch-2.0.0+cpu-cp311-cp311-linux.whl", False)])
def test_the_cpu_index_counts_only_if_it_offers_the_pinned_version(tmp_path, page, offered):
    import functools
    import http.server
    import threading

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text(f'<a href="../{page}">{page}</a>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            assert torch_source.offers_cpu_build(f"http://127.0.0.1:{server.server_port}") is offered
        finally:
            server.shutdown()
    assert torch_source.offers_cpu_build("http://127.0.0.1:9/no-server", timeout=2) is False
