package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/approvals"
)

// iamType matches resource types that grant identity or access: AWS, Google
// and Azure IAM, Kubernetes RBAC, Vault policies and auth roles.
var iamType = regexp.MustCompile(`(^|_)iam(_|$)|^azurerm_role_(assignment|definition)$|^azuread_|^kubernetes_(cluster_)?role(_binding)?(_v1)?$|^vault_(policy|.*_auth_backend_role|token_auth_backend_role)$|^google_.*_(binding|member|policy)$`)

// world is every address, v4 and v6.
var world = []string{"0.0.0.0/0", "::/0"}

// Risks flags what a plan does that deserves a second look whatever the
// policies say: destroys, replacements, identity and access changes, and
// network rules that admit the whole internet. It reads actions, types and
// a few network attributes, never other values.
func Risks(plan *tfjson.Plan) []approvals.Risk {
	if plan == nil {
		return nil
	}
	var out []approvals.Risk
	for _, rc := range plan.ResourceChanges {
		if rc == nil || rc.Change == nil || rc.Mode == tfjson.DataResourceMode {
			continue
		}
		a := rc.Change.Actions
		switch {
		case a.Replace():
			out = append(out, approvals.Risk{Kind: approvals.RiskReplace, Address: rc.Address, Detail: rc.Type})
		case a.Delete():
			out = append(out, approvals.Risk{Kind: approvals.RiskDestroy, Address: rc.Address, Detail: rc.Type})
		}
		changes := a.Create() || a.Update() || a.Delete() || a.Replace()
		if changes && iamType.MatchString(rc.Type) {
			out = append(out, approvals.Risk{Kind: approvals.RiskIAM, Address: rc.Address, Detail: rc.Type})
		}
		if (a.Create() || a.Update() || a.Replace()) && openIngress(rc.Type, rc.Change.After) {
			out = append(out, approvals.Risk{Kind: approvals.RiskOpenIngress, Address: rc.Address,
				Detail: fmt.Sprintf("%s admits %s", rc.Type, strings.Join(world, " or "))})
		}
	}
	return out
}

// openIngress reports whether a network rule, as planned, admits traffic
// from anywhere.
func openIngress(typ string, after any) bool {
	v, _ := after.(map[string]any)
	if v == nil {
		return false
	}
	switch typ {
	case "aws_security_group":
		for _, rule := range list(v["ingress"]) {
			if r, ok := rule.(map[string]any); ok && anyWorld([]any{r["cidr_blocks"], r["ipv6_cidr_blocks"]}) {
				return true
			}
		}
	case "aws_security_group_rule":
		return v["type"] == "ingress" && anyWorld([]any{v["cidr_blocks"], v["ipv6_cidr_blocks"]})
	case "aws_vpc_security_group_ingress_rule":
		return anyWorld([]any{v["cidr_ipv4"], v["cidr_ipv6"]})
	case "google_compute_firewall":
		dir, _ := v["direction"].(string)
		return (dir == "" || dir == "INGRESS") && len(list(v["allow"])) > 0 && anyWorld([]any{v["source_ranges"]})
	case "azurerm_network_security_rule":
		return v["direction"] == "Inbound" && v["access"] == "Allow" &&
			anyWorld([]any{v["source_address_prefix"], v["source_address_prefixes"]}, "*", "Internet")
	}
	return false
}

// anyWorld reports whether any of vs (strings or lists of strings) is a
// world CIDR or one of also.
func anyWorld(vs []any, also ...string) bool {
	for _, v := range vs {
		for _, s := range strs(v) {
			if slices.Contains(world, s) || slices.Contains(also, s) {
				return true
			}
		}
	}
	return false
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func strs(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
