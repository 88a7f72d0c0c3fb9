"""Stage 3, mapping: the mapping spec (sources, one class per sync kind, mapping files), its
compiled form, and the run that turns rows into one-user batches tagged with their rows
(:mod:`.provenance`).
"""
