"""Batch inference jobs: validation, the job-slot queue, the crash-safe runner, the output writer."""
