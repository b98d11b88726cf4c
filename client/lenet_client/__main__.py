"""`python -m lenet_client` and the `lenet-predict` command."""

import signal
import sys

from lenet_client.environment import writable_cache_folder
from lenet_client.text import complain, discard, tolerant_output


class Terminated(BaseException):
    """SIGTERM or SIGHUP (the terminal closed), raised like KeyboardInterrupt, so that a copy being written
    (--sort-into) is removed, not left half."""

    def __init__(self, number: int) -> None:
        self.number = number


def terminate(number: int, frame: object) -> None:
    raise Terminated(number)


def main_exit() -> None:
    writable_cache_folder()  # before onnxruntime is imported
    tolerant_output()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    try:
        from lenet_client.predict import main

        sys.exit(main(every_core=True))  # the command's own process: its main module is this guarded one
    except (KeyboardInterrupt, Terminated) as stopped:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second signal (to the whole group, say)
            signal.signal(signum, signal.SIG_IGN)                        # changes nothing
        number = signal.SIGINT if isinstance(stopped, KeyboardInterrupt) else stopped.number
        complain(f"lenet-predict: interrupted by {signal.Signals(number).name}")
        try:
            if sys.stdout is not None:  # None: started with it closed
                sys.stdout.flush()
        except OSError:  # the terminal hung up: nothing can be shown, and Python's own flush at exit must not fail
            discard(sys.stdout)
        sys.exit(128 + number)


if __name__ == "__main__":
    main_exit()
