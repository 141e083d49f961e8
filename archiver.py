"""The batch job: ``python main.py batch --run``, from a scheduler.

The design card's face. The run is ``order_archiver/batch/job.py`` (``BatchArchiver``: plan the
pass, read and finish the delivered orders in chunks, write them exactly once, checkpoint,
purge, apply the retentions); its parts are in ``order_archiver/batch/`` (plan, report,
counts, samples) and the archive's in ``order_archiver/mongodb/`` (the writer, the purge).
"""

from order_archiver.batch.job import BatchArchiver
from order_archiver.batch.report import BatchOptions, BatchReport

__all__ = ["BatchArchiver", "BatchOptions", "BatchReport"]
