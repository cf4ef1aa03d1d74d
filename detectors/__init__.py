"""Detectors: turn findings and hop metrics into incidents and alerts."""
