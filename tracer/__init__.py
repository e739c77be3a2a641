"""Out-of-process sampler: backends, the sampling loop and the run-folder writer."""
