"""Destinations: the SQLite store, the live terminal view and the headless JSON stream."""
