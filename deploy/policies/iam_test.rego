package twokey.iam_test

import data.twokey.iam

policy(doc) := {"resource_changes": [{"address": "aws_iam_policy.p", "type": "aws_iam_policy", "change": {"actions": ["create"], "after": {"policy": json.marshal(doc)}}}]}

test_star_action_denied if {
	count(iam.deny) == 1 with input as policy({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
	count(iam.deny) == 1 with input as policy({"Statement": {"Effect": "Allow", "Action": ["s3:GetObject", "*:*"], "Resource": "arn:aws:s3:::b/*"}})
}

test_service_star_on_every_resource_denied if {
	count(iam.deny) == 1 with input as policy({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
	count(iam.deny) == 0 with input as policy({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]})
}

test_deny_statement_with_star_allowed if {
	count(iam.deny) == 0 with input as policy({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]})
}

test_iam_change_raises_quorum if {
	iam.required_approvals.approvals == 3 with input as policy({"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]})
	iam.required_groups == {{"group": "security", "msg": "the plan changes IAM"}} with input as policy({"Statement": []})
}

test_no_iam_change_no_quorum if {
	not iam.required_approvals with input as {"resource_changes": [{"address": "aws_iam_policy.p", "type": "aws_iam_policy", "change": {"actions": ["no-op"]}}]}
}
