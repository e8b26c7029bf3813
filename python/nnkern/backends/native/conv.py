"""Native conv ops (none registered yet)."""

OPS: dict = {}
