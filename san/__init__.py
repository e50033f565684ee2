"""SAN: Sharp Attention Network for person re-identification."""
