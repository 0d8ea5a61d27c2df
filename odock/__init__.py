"""Odock's shared contract: generated gRPC stubs (odock.v1) plus the two
pieces of wire format both planes must agree on byte for byte: the virtual-key
format (odock.keyformat) and credential sealing (odock.sealing)."""
