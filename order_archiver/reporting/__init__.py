"""What observes the jobs: progress bars and Prometheus metrics."""
