"""Stage 4, delivery: routing events between the live and historical endpoints, packing batches
into requests, the retry policy, the :class:`EventsClient` and the upload report.
"""
