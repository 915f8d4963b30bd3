"""The recipe as an ordered list of stages: the step each implements, what it creates, its deadline.

Exercises are not stages: they are the tests in tests/e2e, each with its own timeout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    step: str  # the recipe heading (or "suite:" for what the suite adds around the recipe)
    creates: str  # a template over Names/Config attributes, rendered by the plan
    deadline: int  # seconds, default; `--deadline NAME=SECONDS` overrides
    needs: tuple[str, ...] = ()  # what it uses or must follow; the recipe's order is one topological order.
    # The stages run as a graph (meshvm.stagegraph): a stage starts once all it needs passed, and reads
    # only what it needs, directly or through another.


STAGES: tuple[Stage, ...] = (
    Stage("network", "suite: a network of its own for the run",
          "network {n.network}, subnetwork {n.subnetwork} ({c.subnet_range})", 300),
    Stage("firewall", "Allow POD-to-VM traffic on port 9080 (and what else the VM needs)",
          "firewall {n.firewall_prefix}ssh from {ssh}, pods-to-vm: {c.pod_range} -> {n.vm_tag} tcp:9080, "
          "vm-to-pods, vm-to-eastwest", 180,
          needs=("network",)),
    Stage("cluster", "Create K8s Cluster",
          "GKE cluster {n.cluster} in {zone}, pods {c.pod_range}, services {c.service_range}", 1800,
          needs=("network",)),
    Stage("vm", "Create the VM",
          "instance {n.vm} ({c.vm_machine_type}, {c.vm_image_family}) tagged {n.vm_tag}", 600,
          needs=("network", "firewall")),
    Stage("istioctl", "suite: download istioctl {c.istio_version}",
          "a cached, checksummed istioctl under ~/.cache/meshvm", 300),
    Stage("ratings", "Install ratings app on the VM", "systemd unit ratings on {n.vm}, port 9080", 600,
          needs=("vm",)),
    Stage("istio", "Install Istio", "istio-system: istiod, istio-ingressgateway", 600,
          needs=("cluster", "istioctl")),
    Stage("bookinfo", "Deploy BookInfo (sans ratings)",
          "default namespace (injected): details, productpage, reviews v1-v3", 600,
          needs=("istio",)),
    Stage("eastwest", "Install east-west gateway and expose Istiod",
          "istio-eastwestgateway, Gateway istiod-gateway, VirtualService istiod-vs", 600,
          needs=("istio", "vm")),  # the gateway admits the VM's external address
    Stage("ratings_namespace", "Create the ratings namespace and service account",
          "namespace ratings, service account bookinfo-ratings", 120,
          needs=("cluster",)),
    Stage("workloadgroup", "Create the WorkloadGroup", "WorkloadGroup ratings in ratings", 120,
          needs=("istio", "ratings_namespace")),
    Stage("vm_files", "Generate VM artifacts",
          "cluster.env, mesh.yaml, hosts, root-cert.pem, istio-token (0700, outside artifacts)", 300,
          needs=("workloadgroup", "eastwest")),
    Stage("sidecar", "VM configuration recipe", "istio-sidecar package and its files on {n.vm}; "
          "beyond the recipe: `systemctl enable istio` (back after a reboot)", 600,
          needs=("vm", "vm_files", "ratings")),  # one package install at a time on the VM (dpkg's lock)
    Stage("ratings_service", "Exercise 3: a ClusterIP service for ratings",
          "Service ratings in ratings, client pod curl in default", 300,
          needs=("istio", "ratings_namespace")),
    Stage("bookinfo_gateway", "Put it all together: expose BookInfo",
          "Gateway bookinfo-gateway, VirtualService bookinfo", 300,
          needs=("bookinfo",)),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def critical_path(durations: dict[str, float]) -> tuple[list[str], float]:
    """The longest chain of needed stages by the durations given (stages without one count 0 s): the
    least wall time any overlap of the stages could reach. Returns the chain and its length."""
    best: dict[str, tuple[float, list[str]]] = {}
    for stage in STAGES:  # in the recipe's order, a topological order of `needs`
        before = max((best[n] for n in stage.needs if n in best), default=(0.0, []))
        best[stage.name] = (before[0] + durations.get(stage.name, 0.0), [*before[1], stage.name])
    length, chain = max(best.values(), default=(0.0, []))
    return chain, length
# `--until infra`: the cloud's part of the run (network, firewall, cluster, VM reachable over SSH).
ALIASES = {"infra": "vm"}
# Stages the e2e fixtures implement. A run that asks for more is refused at start, never reported
# green for work it did not do.
WIRED: tuple[str, ...] = STAGE_NAMES
BY_NAME = {s.name: s for s in STAGES}
# Teardown gets its own budget on top of the stages: load balancers, the cluster, the VM, the network.
# The exercises' waits that each may take --exercise-deadline: one each in exercises 1-3, three in the
# product page's negative control plus the page itself; beyond the recipe, one for the VM's identity,
# six in the STRICT exercise, seven in the two authorization ones; in the VM's lifecycle eight for its
# health, three for an agent restart, six for an agent stopped past the grace period, four for
# istiod's restart, six for a reboot (tests/e2e).
EXERCISE_WAITS = 48
RECIPE_EXERCISE_WAITS = 7  # of which the recipe's four exercises (an upgrade run's first part)
TEARDOWN_DEADLINE = 1200  # + 300 s of leftover listing: inside nox's 1800 s grace after Ctrl-C
