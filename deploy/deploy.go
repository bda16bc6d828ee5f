// Package deploy holds what an operator deploys twokey with — Vault
// policies, the Slack app manifest, example and demo configurations —
// embedded, so that `twokey demo` and the tests use exactly these files.
package deploy

import "embed"

// Files are the Vault policies (vault/*.hcl) and token roles
// (vault/token-roles.json), the Redis ACL users (redis/users.acl) and the
// demo (demo/…).
//
//go:embed vault/*.hcl vault/token-roles.json redis/users.acl demo
var Files embed.FS
