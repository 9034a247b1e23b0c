"""PromQL: parsing (promql-parser) and evaluation over the storage reader."""
