"""The master process: command line, signals, workers, listeners, upgrade, daemon."""
