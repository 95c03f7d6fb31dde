"""The bundled example configuration (``manager.yaml``), shipped as package data."""
