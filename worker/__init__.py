"""cos-worker: ingestion worker and PostgreSQL memory for the AI Chief of Staff platform."""
