"""Label-map values that are not class indices (a leaf module: the data types,
the renderer and the writers all read them)."""

IGNORE = 255
# label-map value of pixels whose evidence is too far from every class (runtime.unknown)
UNKNOWN = 254
UNKNOWN_NAME = "unknown"
