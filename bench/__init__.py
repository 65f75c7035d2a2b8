"""Benchmarks: each module writes records to `bench/results/<name>.json`; run one from the repository root as
`python -m bench.<name>` (for example `python -m bench.report`, which turns the records into the docs' tables)."""
