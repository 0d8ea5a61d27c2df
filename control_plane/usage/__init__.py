"""Usage metering on the control plane: ingest of node batches, totals and raw records.

Wiring: ``NodeService.ReportUsage`` delegates to :class:`UsageIngestor`;
``UsageService`` lives in ``control_plane.services.usage``.
"""

from control_plane.usage.ingest import StoreUnavailable, UsageIngestor, ingest_batch

__all__ = ["StoreUnavailable", "UsageIngestor", "ingest_batch"]
