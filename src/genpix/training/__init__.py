"""The training loop every family shares, and one small task per family."""
