"""Exports that leave the app: case reports (HTML, PDF) and annotated video clips."""
