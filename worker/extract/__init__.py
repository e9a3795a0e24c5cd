"""Received bytes to text: raw MIME messages and documents (PDF, DOCX, PPTX, XLSX, HTML,
Markdown, plain text), with positions.

Pure parsing: no I/O, no asyncio, no database. These functions run in a child process
(``worker.ingest.parsing``) under a hard timeout and a memory limit, because parsing
hostile input is where a worker can hang or balloon; every entry point returns a result
with a status and reason instead of raising.
"""
