"""`python -m lenet_client` and the `lenet-predict` command."""

import signal
import sys

from lenet_client.environment import writable_cache_folder
from lenet_client.text import tolerant_output


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt, so that a copy being written (--sort-into) is removed, not left half."""


def terminate(number: int, frame: object) -> None:
    raise Terminated


def main_exit() -> None:
    writable_cache_folder()  # before onnxruntime is imported
    tolerant_output()
    signal.signal(signal.SIGTERM, terminate)
    try:
        from lenet_client.predict import main

        sys.exit(main())
    except (KeyboardInterrupt, Terminated) as stopped:
        for number in (signal.SIGINT, signal.SIGTERM):  # a second signal (sent to the whole group, say) changes nothing
            signal.signal(number, signal.SIG_IGN)
        name = "SIGINT" if isinstance(stopped, KeyboardInterrupt) else "SIGTERM"
        print(f"lenet-predict: interrupted by {name}", file=sys.stderr)
        sys.exit(130 if name == "SIGINT" else 143)


if __name__ == "__main__":
    main_exit()
