"""The deployments and what the archiver keeps in them: connections and deployment checks,
the source reader, the archive writer, the rejects list, checkpoints, resume tokens, leases,
and the embedded simulation database."""
