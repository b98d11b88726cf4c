"""Imported last by the forkserver the variant workers are forked from (job.workers.WORKER_MODULES).

gc.freeze() moves everything imported so far out of the garbage collector's sight: the forked workers' collections
then skip those objects (and do not write to, and so copy, their pages), and the server's own exit at the end of
the job does not walk them (about 1 s, during which it holds the job's stdout open for whoever reads it).
The server, and each worker, asks to be killed when its parent exits (job.workers.die_with_parent), so that no
worker outlives a job killed with SIGKILL.
"""

import gc

from job.workers import die_with_parent

die_with_parent()  # the server dies with the job; each worker dies with the server
gc.freeze()
