"""Teardown has one overall budget; the node pool takes its service account from the settings."""

from meshvm.deadlines import Deadline
from meshvm.ledger import Entry
from tests.contract.gcp_fixtures import *  # noqa: F403


def test_each_delete_is_capped_by_the_teardown_budget(cloud):  # noqa: F811
    entry = Entry("cluster", "c", "p/z")
    assert cloud._deadline_for(entry).remaining() > 1000  # a cluster delete's own budget: 30 min
    cloud._teardown_deadline = Deadline.after(5, "teardown")
    assert cloud._deadline_for(entry).remaining() <= 5


def test_node_pool_runs_as_the_configured_minimal_service_account(standin, tmp_path, token_file):  # noqa: F811
    from meshvm.gcp.cluster import body
    from meshvm.seams import NetworkInfo
    from tests.contract.gcp_fixtures import make_cfg

    net = NetworkInfo("projects/p/global/networks/n", "projects/p/regions/r/subnetworks/s", "r", True, "pods", "svc")
    sa = "mesh-nodes@demo-project.iam.gserviceaccount.com"
    assert body(make_cfg(standin, tmp_path, token_file, node_service_account=sa), net).node_pools[0].config \
        .service_account == sa
    assert body(make_cfg(standin, tmp_path, token_file), net).node_pools[0].config.service_account == ""
