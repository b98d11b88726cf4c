"""Imported first by the forkserver the variant workers are forked from (job.running.workers.WORKER_MODULES): the server
asks to be killed when the job exits, however it exits (job.running.workers.die_with_parent), so that neither it nor the
workers forked from it outlive a job killed with SIGKILL. (It ignores SIGINT and SIGTERM from its start:
job.running.stop.helpers_ignore_stop_signals.)
"""

from job.running.workers import die_with_parent

die_with_parent()
