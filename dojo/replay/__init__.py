"""The Zarr episode store, samplers, and the actor/learner link."""
