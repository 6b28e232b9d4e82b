"""Async triggers: the waits of an FL session run in the triggerer, holding no worker slot."""
