"""What a recorded sweep shows: figures, tables, comparisons against the reference and the
sweep's claims (``resablate report``)."""
