"""Training: losses, negative sampling, the loop with early stopping, checkpoints."""
