"""morph4d: one portrait photo -> animatable, real-time 4D head avatar (MVP4D, IM-Portrait)."""

__version__ = "0.1.0"
