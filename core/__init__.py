"""Infrastructure every package imports: the bad-input error, atomic file writes, safetensors and JSON I/O,
device choice, and the cache of files taken out of PyPI wheels. It imports nothing else of tslrec."""
