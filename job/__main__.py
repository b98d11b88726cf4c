"""`python -m job` and the `lenet-mnist` command: the stop signals are the run's from the first instruction (a stop
while torch still loads ends the run at its first check, with its report), then job.cli.main runs the job and
returns the exit status."""

import sys

from job.running.stop import StopRequest


def main_exit() -> None:
    stop = StopRequest()
    stop.install()
    from lenet_client.text import tolerant_output

    tolerant_output()
    from job.cli import main

    code = main(sys.argv[1:], stop)
    import gc

    gc.freeze()  # the interpreter's exit then skips walking torch's and matplotlib's objects
    sys.exit(code)


if __name__ == "__main__":  # a spawned worker process imports this module too: it must not start a run
    main_exit()
