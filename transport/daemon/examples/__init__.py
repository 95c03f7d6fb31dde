"""Bundled example configurations (``daemon.yaml``), shipped as package data."""
