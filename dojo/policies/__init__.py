"""What runs at inference: network modules, encoders and policies loaded from snapshots."""
