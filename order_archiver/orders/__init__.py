"""What an order becomes, without a server: the PII policy, the enrichment and finishing of
an archive document, the selection of a window."""
