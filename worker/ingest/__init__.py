"""The pipeline and its stages: receive -> fetch -> chunk -> embed -> store -> record.
Knows neither arq nor SQL: it calls ``worker.db`` for rows and is called by ``worker.queue``."""
