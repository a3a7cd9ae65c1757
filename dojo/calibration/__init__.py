"""Camera intrinsics, hand-eye, workspace bounds and latency."""
