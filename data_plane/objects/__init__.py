"""Provider-side objects created through the gateway (files, batches) and who owns them.

The provider holds the object; the control plane holds its owner (``NodeService.PutObject``
and friends). A data-plane node asks the :class:`~data_plane.objects.ledger.Ledger` on the
files and batches endpoints only, never on the chat path.
"""
