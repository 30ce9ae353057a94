"""Monitoring: checks run concurrently per environment, evaluated against thresholds, fed to alerts."""
