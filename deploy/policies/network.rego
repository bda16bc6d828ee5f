# No network rule admits the whole internet.
package twokey.network

world := {"0.0.0.0/0", "::/0"}

changed contains rc if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action in {"create", "update"}
}

deny contains msg if {
	some rc in changed
	rc.type == "aws_security_group"
	some rule in rc.change.after.ingress
	some cidr in array.concat(object.get(rule, "cidr_blocks", []), object.get(rule, "ipv6_cidr_blocks", []))
	cidr in world
	msg := sprintf("%s: ingress from %s (ports %v-%v) is open to the internet", [rc.address, cidr, rule.from_port, rule.to_port])
}

deny contains msg if {
	some rc in changed
	rc.type == "aws_security_group_rule"
	rc.change.after.type == "ingress"
	some cidr in array.concat(object.get(rc.change.after, "cidr_blocks", []), object.get(rc.change.after, "ipv6_cidr_blocks", []))
	cidr in world
	msg := sprintf("%s: ingress from %s is open to the internet", [rc.address, cidr])
}

deny contains msg if {
	some rc in changed
	rc.type == "aws_vpc_security_group_ingress_rule"
	some key in ["cidr_ipv4", "cidr_ipv6"]
	rc.change.after[key] in world
	msg := sprintf("%s: ingress from %s is open to the internet", [rc.address, rc.change.after[key]])
}

deny contains msg if {
	some rc in changed
	rc.type == "google_compute_firewall"
	object.get(rc.change.after, "direction", "INGRESS") == "INGRESS"
	count(object.get(rc.change.after, "allow", [])) > 0
	some cidr in rc.change.after.source_ranges
	cidr in world
	msg := sprintf("%s: firewall allows %s", [rc.address, cidr])
}
