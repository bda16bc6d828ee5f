package twokey.network_test

import data.twokey.network

sg(ingress) := {"resource_changes": [{
	"address": "aws_security_group.web",
	"type": "aws_security_group",
	"change": {"actions": ["create"], "after": {"ingress": ingress}},
}]}

test_open_ingress_denied if {
	msgs := network.deny with input as sg([{"cidr_blocks": ["0.0.0.0/0"], "from_port": 22, "to_port": 22}])
	msgs == {"aws_security_group.web: ingress from 0.0.0.0/0 (ports 22-22) is open to the internet"}
}

test_ipv6_open_ingress_denied if {
	count(network.deny) == 1 with input as sg([{"cidr_blocks": [], "ipv6_cidr_blocks": ["::/0"], "from_port": 443, "to_port": 443}])
}

test_private_ingress_allowed if {
	count(network.deny) == 0 with input as sg([{"cidr_blocks": ["10.0.0.0/8"], "from_port": 22, "to_port": 22}])
}

test_rule_and_vpc_rule if {
	msgs := network.deny with input as {"resource_changes": [
		{"address": "aws_security_group_rule.r", "type": "aws_security_group_rule", "change": {"actions": ["create"], "after": {"type": "ingress", "cidr_blocks": ["0.0.0.0/0"]}}},
		{"address": "aws_security_group_rule.egress", "type": "aws_security_group_rule", "change": {"actions": ["create"], "after": {"type": "egress", "cidr_blocks": ["0.0.0.0/0"]}}},
		{"address": "aws_vpc_security_group_ingress_rule.v", "type": "aws_vpc_security_group_ingress_rule", "change": {"actions": ["update"], "after": {"cidr_ipv4": "0.0.0.0/0"}}},
		{"address": "google_compute_firewall.f", "type": "google_compute_firewall", "change": {"actions": ["create"], "after": {"allow": [{"protocol": "tcp"}], "source_ranges": ["0.0.0.0/0"]}}},
	]}
	count(msgs) == 3
}

test_deleting_an_open_rule_is_fine if {
	count(network.deny) == 0 with input as {"resource_changes": [{"address": "aws_security_group_rule.r", "type": "aws_security_group_rule", "change": {"actions": ["delete"], "after": null}}]}
}
