"""Every setting of the suite, declared once: `--x` on the command line <-> `E2E_X` in the environment.

This table is the single source for the pytest options, the environment variables, the README's
settings table and the parsing in `config.py`. Defaults are written as text and parsed like input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str  # the option without dashes, e.g. "gcp-project"
    help: str
    default: str | None = None  # text, parsed like user input; None = not set
    kind: str = "str"  # str | int | list | map | flag
    choices: tuple[str, ...] = ()
    alias: str | None = None  # a shorter option for the same setting, e.g. --to

    @property
    def option(self) -> str:
        return f"--{self.name}"

    @property
    def options(self) -> tuple[str, ...]:
        return (self.option, f"--{self.alias}") if self.alias else (self.option,)

    @property
    def env(self) -> str:
        return "E2E_" + self.name.upper().replace("-", "_")

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def label(self) -> str:
        """How errors name the setting: both spellings a user may have used."""
        return f"{' / '.join(self.options)} / {self.env}"


SETTINGS: tuple[Setting, ...] = (
    # where
    Setting("platform", "where to run: gcp (Google Cloud) or lab (local rehearsal, root)", "gcp",
            choices=("gcp", "lab")),
    Setting("gcp-project", "Google Cloud project id (required on gcp)"),
    Setting("gcp-access-token-file", "file holding an OAuth access token, re-read before every use "
            "(default: Application Default Credentials)"),
    Setting("zone", "zone(s) to try in order, all in one region", "us-central1-a", kind="list"),
    Setting("network", "existing VPC network to use (default: a network created for the run)"),
    Setting("subnetwork", "existing subnetwork of --network (default: one created for the run)"),
    Setting("subnet-range", "primary range of the run's subnetwork (VMs and nodes)", "10.10.0.0/20"),
    Setting("pod-range", "cluster pod range, fixed at creation (the recipe's CLUSTER_POD_CIDR)",
            "10.16.0.0/14"),
    Setting("service-range", "cluster service range, fixed at creation", "10.20.0.0/20"),
    Setting("ssh-source-ranges", "CIDRs of the runner's egress: allowed to SSH to the VM and to reach "
            "the ingress load balancer", kind="list"),
    Setting("allow-ssh-from-anywhere", "explicit opt-in to let --ssh-source-ranges contain 0.0.0.0/0",
            kind="flag"),
    Setting("compute-endpoint", "Compute Engine API endpoint override (private endpoint; the lab's)"),
    Setting("container-endpoint", "GKE API endpoint override (private endpoint; the lab's)"),
    Setting("iam-endpoint", "IAM API endpoint override (preflight's actAs check; the lab's)"),
    Setting("resourcemanager-endpoint", "Resource Manager API endpoint override (preflight's organisation "
            "policy checks; the lab's)"),
    # the cluster
    Setting("cluster-name", "GKE cluster name, <= 40 chars (default: derived from the run id)"),
    Setting("release-channel", "GKE release channel", "regular",
            choices=("rapid", "regular", "stable", "none")),
    Setting("cluster-version", "GKE version prefix such as 1.33 (default: the channel's default)"),
    Setting("cluster-machine-type", "node machine type", "e2-standard-4"),
    Setting("node-count", "nodes in the node pool", "2", kind="int"),
    Setting("node-disk-gb", "node boot disk size in GB", "50", kind="int"),
    Setting("node-service-account", "a minimal service account email for the nodes (default: GKE's default)"),
    # the VM
    Setting("vm-name", "VM name (default: derived from the run id)"),
    Setting("vm-machine-type", "VM machine type (the recipe's)", "n1-standard-2"),
    Setting("vm-image-family", "VM image family in ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
    # what runs
    Setting("istio-version", "Istio release under test (an upgrade run's first one): X.Y.Z, X.Y.Z-rc.N, or a "
            "minor X.Y (its newest patch in the release listing, resolved when the run starts)", "1.31",
            alias="from"),
    Setting("upgrade-to", "the Istio release an upgrade run (nox -s upgrade) moves to, spelled as --istio-version; "
            "at most one minor after it", alias="to"),
    Setting("upgrade-strategy", "how an upgrade run moves the control plane: in-place (istioctl install over the "
            "running one) or canary (a revision beside it)", "in-place", choices=("in-place", "canary"),
            alias="strategy"),
    Setting("istio-release-listing", "Istio's release listing (GitHub's releases API) that resolves a minor "
            "to its newest patch", "https://api.github.com/repos/istio/istio/releases?per_page=100"),
    Setting("istio-hub", "image hub given to every istioctl install (--set hub=) and required of every "
            "Istio image that runs", "docker.io/istio"),
    Setting("istio-release-url", "base URL of Istio's release archives",
            "https://github.com/istio/istio/releases/download"),
    Setting("sidecar-base-url", "base URL of istio-sidecar.deb: <base>/<version>/deb/istio-sidecar[-arm64].deb "
            "with its .sha256 (docs/facts.md section 6)", "https://blob.istio.io/istio-release/releases"),
    Setting("sidecar-fallback-urls", "further base URLs tried in order after --sidecar-base-url (none by default)",
            kind="list"),
    Setting("eastwest-lb", "east-west gateway load balancer: internal to the run's network, or external "
            "(source ranges restricted to the VM)", "internal", choices=("internal", "external")),
    Setting("wg-probe", "WorkloadGroup readiness probe on ratings /health, so health checks are real",
            "on", choices=("on", "off")),
    Setting("token-duration", "lifetime in seconds of the VM's istio-token (--tokenDuration); at least the "
            "worst case from stage vm_files to exercise 1", "3600", kind="int"),
    Setting("ratings-source", "folder with ratings.js + package.json (default: BookInfo's at the "
            "release tag)"),
    Setting("bookinfo-image-prefix", "BookInfo image prefix", "docker.io/istio/examples-bookinfo"),
    Setting("bookinfo-image-tag", "BookInfo image tag", "1.20.3"),
    # the run
    Setting("run-id", "run id; every name and label derives from it (default: time + random)"),
    Setting("reuse", "run id of a kept run (--keep) whose network, firewall rules, cluster and VM this run "
            "adopts instead of creating, then tears down unless kept again (gcp only)"),
    Setting("artifacts-dir", "where reports go (default: artifacts/<run id>; with --reuse "
            "artifacts/<run id>-reuse-<UTC time>)"),
    Setting("keep", "keep what was created: never, on-failure or always", "never",
            choices=("never", "on-failure", "always")),
    Setting("expires-hours", "hours after which the janitor may delete a kept run", "8", kind="int"),
    Setting("until", "run the stages up to and including this one, then stop"),
    Setting("deadline", "per-stage deadline override, STAGE=SECONDS (repeatable)", kind="map"),
    Setting("exercise-deadline", "seconds each exercise keeps retrying its check before it fails", "300",
            kind="int"),
    Setting("fail-at", "testing: fail the run right after this stage (teardown must still leave nothing)"),
    Setting("lab-timing", "lab only: fast, or gcp[:FACTOR] to answer with Google Cloud's usual latencies "
            "times FACTOR (default 0.1): cluster, VM, first-boot apt, load balancers, image pulls", "fast"),
    Setting("sequential-stages", "testing: run the stages one after another in the recipe's order (what the "
            "overlap saves is measured against it)", kind="flag"),
    Setting("plan", "print the run plan for these settings and exit, touching nothing", kind="flag"),
)

BY_FIELD = {s.field: s for s in SETTINGS}
