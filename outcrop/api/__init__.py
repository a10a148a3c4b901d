"""HTTP surfaces: one FastAPI app, one folder per dialect."""
