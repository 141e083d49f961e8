"""The commands around the jobs: status, verify (and its repair), doctor."""
