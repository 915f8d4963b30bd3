"""Teardown has one overall budget: no delete may outlive it (it must end inside nox's grace)."""

from meshvm.deadlines import Deadline
from meshvm.ledger import Entry
from tests.contract.gcp_fixtures import *  # noqa: F403


def test_each_delete_is_capped_by_the_teardown_budget(cloud):  # noqa: F811
    entry = Entry("cluster", "c", "p/z")
    assert cloud._deadline_for(entry).remaining() > 1000  # a cluster delete's own budget: 30 min
    cloud._teardown_deadline = Deadline.after(5, "teardown")
    assert cloud._deadline_for(entry).remaining() <= 5
