"""Training (torch): the loop, its config and presets, losses, distributed runs, checkpoints
and the mask-health records."""
