"""Native linear ops (none registered yet)."""

OPS: dict = {}
