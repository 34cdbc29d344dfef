"""Deferrable sensors of effopt; each waits through a trigger in ``effopt.triggers``."""
