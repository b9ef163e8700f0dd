"""The message contract: every message that crosses a socket is defined here and nowhere else."""
