"""Native norm ops (none registered yet)."""

OPS: dict = {}
