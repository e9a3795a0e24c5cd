"""Everything that knows arq and the Redis keys: the worker app, job functions, the
connector client, the reconciler, hand-offs. The only package that imports arq."""
