package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/policy"
)

// bigPlan is a plan of n resource changes of the kinds the library looks
// at, with configuration-sized values.
func bigPlan(b *testing.B, n int) *tfjson.Plan {
	b.Helper()
	var rcs []map[string]any
	for i := range n {
		var typ string
		after := map[string]any{"tags": map[string]any{"owner": "team", "cost-center": "42"}, "name": fmt.Sprintf("r-%d", i)}
		switch i % 5 {
		case 0:
			typ = "aws_security_group"
			after["ingress"] = []any{map[string]any{"cidr_blocks": []any{"10.0.0.0/8"}, "from_port": 443, "to_port": 443}}
		case 1:
			typ = "aws_s3_bucket_acl"
			after["acl"] = "private"
		case 2:
			typ = "aws_iam_policy"
			after["policy"] = `{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}`
		case 3:
			typ = "aws_instance"
			after["ami"], after["instance_type"] = "ami-123", "t3.micro"
		default:
			typ = "terraform_data"
			after = map[string]any{"input": "x"}
		}
		rcs = append(rcs, map[string]any{"address": fmt.Sprintf("%s.r%d", typ, i), "mode": "managed", "type": typ,
			"name": fmt.Sprintf("r%d", i), "change": map[string]any{"actions": []any{"create"}, "before": nil, "after": after,
				"after_sensitive": map[string]any{}, "before_sensitive": false}})
	}
	js, err := json.Marshal(map[string]any{"format_version": "1.2", "terraform_version": "1.12.2", "resource_changes": rcs})
	if err != nil {
		b.Fatal(err)
	}
	var p tfjson.Plan
	if err := json.Unmarshal(js, &p); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(js))/1e6, "MB-plan-json")
	return &p
}

// BenchmarkCheck is the whole policy step on plans of 20 and 5,000
// resources with the shipped library: plan to input, evaluation of every
// rule, built-in risks.
//
//	go test -run '^$' -bench BenchmarkCheck -benchmem ./policy
func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{20, 5000} {
		b.Run(fmt.Sprintf("resources=%d", n), func(b *testing.B) {
			p := bigPlan(b, n)
			e := policy.New()
			if _, err := e.Check(context.Background(), library, p); err != nil { // compile once
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				a, err := e.Check(context.Background(), library, p)
				if err != nil || len(a.Denied) != 0 {
					b.Fatalf("%v %+v", err, a.Denied)
				}
			}
		})
	}
}
