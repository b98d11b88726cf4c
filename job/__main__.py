import sys

from job.pipeline import main

sys.exit(main())
