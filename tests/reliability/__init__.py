"""Reliability tests: real daemons under load, faults injected (kill -9, outages), nothing acknowledged lost."""
