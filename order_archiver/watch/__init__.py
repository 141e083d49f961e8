"""The parts of a watcher that ``watcher.Watcher`` orchestrates: what it counts and logs, and
how a micro-batch of change events becomes archive documents."""
