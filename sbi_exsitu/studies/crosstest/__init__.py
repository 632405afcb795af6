"""crosstest."""
