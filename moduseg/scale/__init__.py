"""Batch work beyond one process: shards (any scheduler) and a Ray Data driver."""
