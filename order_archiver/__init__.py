"""order-archiver: archives delivered food-delivery orders out of MongoDB, enriched, exactly
once. The package is the product; the top-level modules (``main``, ``archiver``, ``watcher``,
``config``, ``logger``, ``generator``, ``simulate``, ``demo``) are the design card's face and
only hand on to it. Its layers, each importing only those before it in this list
(tests/unit/test_layout.py holds the rule):

- ``errors``, ``retry``, ``durable``: exit codes, the one error classification, the one retry
  policy, fsync before a file is trusted;
- ``orders``: what an order becomes, without a server: PII policy, enrichment, finishing,
  erasure, selection;
- ``settings``, ``logs``: every setting (the one reader of the environment), the logs;
- ``reporting``: progress bars and Prometheus metrics, which observe the jobs;
- ``simulation``: the generator and the embedded database;
- ``mongodb``: the deployments and what the archiver keeps in them: connections, the source
  reader, the archive writer, erasure, retention, rejects, checkpoints, tokens, leases;
- ``batch``, ``watch``: the two jobs;
- ``operations``: the commands around the jobs: status, verify, doctor, restore, forget;
- ``cli``: the command line: options declared once, one runner.
"""

__version__ = "0.1.0"
