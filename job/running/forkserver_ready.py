"""Imported last by the forkserver the variant workers are forked from (job.running.workers.WORKER_MODULES).

gc.freeze() moves everything imported so far out of the garbage collector's sight: the forked workers' collections
then skip those objects (and do not write to, and so copy, their pages), and the server's own exit at the end of
the job does not walk them (about 1 s, during which it holds the job's stdout open for whoever reads it).
"""

import gc

gc.freeze()
