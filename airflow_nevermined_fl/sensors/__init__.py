"""Sensors: the deferrable waits of an FL session on its coordinator."""
