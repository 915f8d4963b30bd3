"""The lab's local Google Cloud STAND-IN: enough of the Compute v1 and GKE v1 REST APIs for the real
client libraries, backed by real lab VMs and the lab router's firewall. Never imported by meshvm.gcp."""
