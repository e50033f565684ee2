"""SAN network modules."""
