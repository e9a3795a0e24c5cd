"""Pure text logic: tokens, transcript parsing, chunking. Imports nothing that does I/O."""
