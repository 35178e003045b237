"""Label values with a meaning of their own (a leaf module: anything may import it)."""

IGNORE = 255          # no class assigned
UNKNOWN = 254         # too far from every class of the bank (runtime.unknown)
UNKNOWN_NAME = "unknown"
