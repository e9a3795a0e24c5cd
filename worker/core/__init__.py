"""The worker's vocabulary: payload models, settings, text hygiene, logging. No I/O."""
