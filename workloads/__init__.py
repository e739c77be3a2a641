"""Classic workloads under every concurrency model."""
