"""Console entry points of the toolkit (thin: parse, build, call one library function)."""
