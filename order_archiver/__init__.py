"""What grew beyond the design card's modules, by layer (each imports only the layers above it
in this list; tests/unit/test_layout.py holds the rule):

- ``errors`` and ``retry``: exit codes, the one error classification, the one retry policy;
- ``orders``: what an order becomes, without a server: PII policy, enrichment, selection;
- ``reporting``: progress bars and Prometheus metrics, which observe the jobs;
- ``mongodb``: the deployments and what the archiver keeps in them: connections, the source
  reader, the archive writer, rejects, checkpoints, tokens, leases, the embedded simulation;
- ``operations``: the commands around the jobs: status, verify, doctor.

The jobs (``archiver``, ``watcher``), the settings (``config``), the logs (``logger``), the
generator and the command line (``main``, ``simulate``, ``demo``) stay at the top level, as
the design card has them.
"""
