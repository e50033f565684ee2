"""Files, images and processes, torch-free: atomic writes and locks, the error base, image
decoding, image discovery, progress, failpoints and optional-dependency messages."""
