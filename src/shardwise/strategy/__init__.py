"""The strategy-independent layer: `wrap`, strategy names, model state."""
