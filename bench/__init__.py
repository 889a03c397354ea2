"""``make bench``: stream-reading throughput and CPU cost (see bench/run.py)."""
