# No IAM policy allows every action, and IAM changes need the security team.
package twokey.iam

policy_types := {"aws_iam_policy", "aws_iam_role_policy", "aws_iam_user_policy", "aws_iam_group_policy"}

changed contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

statements(doc) := doc.Statement if is_array(doc.Statement)

statements(doc) := [doc.Statement] if is_object(doc.Statement)

as_list(x) := x if is_array(x)

as_list(x) := [x] if is_string(x)

deny contains msg if {
	some rc in changed
	rc.type in policy_types
	is_string(rc.change.after.policy)
	some st in statements(json.unmarshal(rc.change.after.policy))
	st.Effect == "Allow"
	some action in as_list(object.get(st, "Action", []))
	action in {"*", "*:*"}
	msg := sprintf("%s: a statement allows every action (%q)", [rc.address, action])
}

deny contains msg if {
	some rc in changed
	rc.type in policy_types
	is_string(rc.change.after.policy)
	some st in statements(json.unmarshal(rc.change.after.policy))
	st.Effect == "Allow"
	some action in as_list(object.get(st, "Action", []))
	endswith(action, ":*")
	action != "*:*"
	some resource in as_list(object.get(st, "Resource", []))
	resource == "*"
	msg := sprintf("%s: a statement allows every %s action on every resource", [rc.address, trim_suffix(action, ":*")])
}

iam_change if {
	some rc in input.resource_changes
	startswith(rc.type, "aws_iam_")
	not rc.change.actions == ["no-op"]
	not rc.change.actions == ["read"]
}

required_approvals := {"approvals": 3, "msg": "the plan changes IAM"} if iam_change

required_groups contains {"group": "security", "msg": "the plan changes IAM"} if iam_change
