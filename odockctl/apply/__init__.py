"""odockctl apply: make the control plane match a YAML file, idempotently."""
