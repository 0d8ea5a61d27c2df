"""odockctl: the admin command-line tool over the control plane's gRPC API."""
