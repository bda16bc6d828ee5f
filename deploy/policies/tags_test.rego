package twokey.tags_test

import data.twokey.tags

rc(after) := {"resource_changes": [{"address": "aws_instance.a", "type": "aws_instance", "change": {"actions": ["create"], "after": after}}]}

test_missing_tags_denied if {
	tags.deny == {"aws_instance.a: missing required tags [\"cost-center\"]"} with input as rc({"tags": {"owner": "team-a"}})
}

test_tags_all_counts if {
	count(tags.deny) == 0 with input as rc({"tags": null, "tags_all": {"owner": "a", "cost-center": "42"}})
}

test_untaggable_resource_ignored if {
	count(tags.deny) == 0 with input as {"resource_changes": [{"address": "terraform_data.a", "type": "terraform_data", "change": {"actions": ["create"], "after": {"input": "x"}}}]}
}
