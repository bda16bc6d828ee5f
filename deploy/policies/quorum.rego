# Destroying anything tagged critical needs three approvals, one from the
# security team.
package twokey.quorum

critical_destroy contains rc.address if {
	some rc in input.resource_changes
	"delete" in rc.change.actions
	is_object(rc.change.before)
	tags := rc.change.before.tags
	is_object(tags)
	tags.critical == "true"
}

required_approvals := {"approvals": 3, "msg": sprintf("destroys critical %v", [sort(critical_destroy)])} if count(critical_destroy) > 0

required_groups contains {"group": "security", "msg": "destroys a critical resource"} if count(critical_destroy) > 0

warn contains msg if {
	some address in critical_destroy
	msg := sprintf("%s is tagged critical and will be destroyed", [address])
}
