"""`python -m lenet_client` and the `lenet-predict` command."""

import sys

from lenet_client.environment import writable_cache_folder
from lenet_client.text import tolerant_output


def main_exit() -> None:
    writable_cache_folder()  # before onnxruntime is imported
    tolerant_output()
    from lenet_client.predict import main

    sys.exit(main())


if __name__ == "__main__":
    main_exit()
