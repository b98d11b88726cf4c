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
    except KeyboardInterrupt:
        print("lenet-predict: interrupted by SIGINT", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("lenet-predict: interrupted by SIGTERM", file=sys.stderr)
        sys.exit(143)


if __name__ == "__main__":
    main_exit()
