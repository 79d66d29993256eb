"""The local system."""
