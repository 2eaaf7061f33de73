"""MVNet: turn music into paintings in the style of the art era it sounds like."""

# The report's labels, in its order (label k is ERAS[k]).
ERAS = ("renaissance", "baroque", "classical", "romantic", "modern")

__all__ = ["ERAS"]
