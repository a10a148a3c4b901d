"""The `outcrop` command."""
