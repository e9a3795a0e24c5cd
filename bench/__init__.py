"""Ingestion benchmark suite: ``python -m bench.run --size small|medium|large``."""
