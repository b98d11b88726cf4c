import sys

from job.cli import main

if __name__ == "__main__":  # a spawned worker process imports this module too: it must not start a run
    sys.exit(main())
