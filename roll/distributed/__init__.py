"""Distributed plumbing used from above: the Batch record passed between roles (`batch`), and the Ray
runtime, resource manager, WorkerGroup, dispatch and weight sync."""
