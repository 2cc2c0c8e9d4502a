"""The connected side and the bundle format: keys, locks, fetching, writing, reading."""
