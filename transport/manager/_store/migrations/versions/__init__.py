"""The migration revisions, oldest first by ``down_revision``."""
