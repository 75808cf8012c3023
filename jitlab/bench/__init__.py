"""Measurement library behind experiments/: timing, variants, sweeps, tables. Experiments stay thin."""
