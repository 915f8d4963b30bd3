"""The Cloud seam on Google Cloud: Compute Engine and GKE through google-cloud-compute and
google-cloud-container (REST transport). The lab points this same code at its local stand-in
through `cfg.compute_endpoint` / `cfg.container_endpoint`; nothing here knows about the lab."""
