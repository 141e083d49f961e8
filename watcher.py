"""The watcher: ``python main.py watch``, a 24/7 service on MongoDB change streams.

The design card's face. The service is ``order_archiver/watch/watcher.py`` (``Watcher``: the
stream, micro-batches, the resume token saved after the writes it covers, reconnects, the
lease); a micro-batch is archived by ``order_archiver/watch/archiving.py`` through the same
finishing and writing as a batch chunk.
"""

from order_archiver.watch.watcher import Watcher, WatchOptions

__all__ = ["WatchOptions", "Watcher"]
