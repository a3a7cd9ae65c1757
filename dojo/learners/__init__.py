"""JAX agents, the learner process and checkpoints."""
