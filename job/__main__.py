import sys

from job.preflight import temporary_folder_or_exit


def main_exit() -> None:
    """`python -m job` and the `lenet-mnist` command."""
    temporary_folder_or_exit()
    from job.cli import main  # imports matplotlib and torch, which need a temporary folder

    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":  # a spawned worker process imports this module too: it must not start a run
    main_exit()
