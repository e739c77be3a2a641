"""Run analysis: pure functions from run DataFrames to metrics, plots and reports."""
