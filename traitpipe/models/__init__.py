"""Models: devices, checkpoint files, the classifier source registry, training loops."""
