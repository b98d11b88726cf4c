import gc
import sys

from job.running.stop import catch_early_signals

catch_early_signals()

from job.preflight import matplotlib_config_folder, temporary_folder_or_exit  # noqa: E402
from lenet_client.environment import writable_cache_folder  # noqa: E402
from lenet_client.text import tolerant_output  # noqa: E402


def main_exit() -> None:
    """`python -m job` and the `lenet-mnist` command."""
    tolerant_output()
    temporary_folder_or_exit()
    matplotlib_config_folder()
    writable_cache_folder()  # before the forkserver and the job import onnxruntime
    start_worker_server_if_needed()
    from job.cli import main  # imports matplotlib and torch, which need a temporary folder

    code = main(sys.argv[1:])
    gc.freeze()  # the interpreter's exit then skips walking torch's and matplotlib's objects: ~0.4 s
    sys.exit(code)


def start_worker_server_if_needed() -> None:
    """Start the server the variants' worker processes are forked from before the job imports torch, so that
    the two import side by side (job.running.workers). A bad setting is left to job.cli to report."""
    if sys.argv[1:]:  # --help, --version or a bad argument: no run
        return
    from job.settings import SettingsError, load_settings
    from job.running.workers import might_share_the_cpu, start_worker_server

    try:
        if might_share_the_cpu(load_settings()):
            start_worker_server()
    except SettingsError:
        pass


if __name__ == "__main__":  # a spawned worker process imports this module too: it must not start a run
    main_exit()
