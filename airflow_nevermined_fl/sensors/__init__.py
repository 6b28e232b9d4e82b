"""Sensors: the waits of an FL session on its coordinator (poke, reschedule, or deferred to a trigger)."""
