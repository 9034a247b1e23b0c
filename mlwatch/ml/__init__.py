"""ML quality metrics from prediction logs: sliding confusion-matrix and regression windows, late-label
joins, sampling uncertainty, drift, and a synthetic prediction stream."""
