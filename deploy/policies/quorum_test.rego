package twokey.quorum_test

import data.twokey.quorum

destroy(tags) := {"resource_changes": [{"address": "aws_db_instance.main", "type": "aws_db_instance", "change": {"actions": ["delete"], "before": {"tags": tags}, "after": null}}]}

test_critical_destroy_needs_security if {
	quorum.required_approvals.approvals == 3 with input as destroy({"critical": "true"})
	quorum.required_groups == {{"group": "security", "msg": "destroys a critical resource"}} with input as destroy({"critical": "true"})
	quorum.warn == {"aws_db_instance.main is tagged critical and will be destroyed"} with input as destroy({"critical": "true"})
}

test_ordinary_destroy_does_not if {
	not quorum.required_approvals with input as destroy({"owner": "a"})
	not quorum.required_approvals with input as destroy(null)
}
