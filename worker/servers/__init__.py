"""Embedded PostgreSQL and Redis from wheels, for the demo and the tests."""
