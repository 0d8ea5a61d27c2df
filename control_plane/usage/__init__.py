"""Usage metering on the control plane: ingest of node batches, totals and raw records.

Decisions (the data-plane half relies on these):

- Idempotency is on ``request_id`` alone (the primary key of ``usage_records``).
  ``attempt`` and ``node_id`` say which delivery of a record was stored; a
  record sent again with the same request id (a spool replay, a lost ack, a
  retry from another worker) is a duplicate whatever its attempt or node, and
  the first stored copy wins. Request ids must therefore be unique per request
  (not per shipping attempt), at most 128 characters.
- ``UsageAck`` is sent only after the batch's transaction committed:
  ``accepted`` newly stored, ``duplicates`` already stored (or repeated within
  the batch), ``rejected`` malformed and dropped for good (no request id, org
  or time; negative counters; over-long strings or NUL characters; out-of-range
  codes), logged with the request id. The three always add up to the batch size,
  so a node may forget an acked batch entirely.
- A database that cannot take a batch makes the stream fail with UNAVAILABLE
  and the batch is not acked: the node keeps it and sends it again. A batch
  over ``priority.SLICE_ROWS`` (250) records is stored in several transactions, so
  part of it may already be stored; those records come back as duplicates.
- ``usage_rollups`` holds hourly totals per (org, hour, key, model, outcome),
  bumped in the same transaction and only for rows actually inserted. Totals are
  served from it (day = 24 hours, UTC). Raw rows carry no model or pricing data
  and no foreign keys: usage outlives deleted orgs, keys and models. Old rows
  and rollups are pruned by ``retention.py`` (docs/operations.md).

Wiring: ``NodeService.ReportUsage`` delegates to :class:`UsageIngestor`;
``UsageService`` lives in ``control_plane.services.usage``.
"""

from control_plane.usage.ingest import StoreUnavailable, UsageIngestor, ingest_batch

__all__ = ["StoreUnavailable", "UsageIngestor", "ingest_batch"]
