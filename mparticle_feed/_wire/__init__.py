"""Stage 1, the wire: enums, value converters, the frozen attrs models of a batch and its events,
the sparse ``__init__`` they share, and the codec (``dumps``/``loads``/``to_dict``/``from_dict``).

Everything else builds on this stage; it imports nothing from the later ones.
"""
