"""Native pool ops (none registered yet)."""

OPS: dict = {}
