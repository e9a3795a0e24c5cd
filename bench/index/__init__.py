"""Vector index strategies side by side: ``python -m bench.index`` (bench/INDEX.md)."""
