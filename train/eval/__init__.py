"""Evaluation harness: per-task metrics, the arena score and report tables (DESIGN §5.4)."""
