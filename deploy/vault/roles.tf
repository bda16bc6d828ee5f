# The Vault side of deploy/twokey.example.yaml, as Terraform (provider
# hashicorp/vault). Apply it once with an admin token.
#
# Token roles: twokey mints one child token per plan or apply from these. The
# tokens are orphans (they survive a rotation of twokey's own login), not
# renewable, and capped by token_explicit_max_ttl, so no token outlives its
# run by more than the TTL in the twokey config.

# The token roles are defined once, in token-roles.json, as the fields of
# Vault's auth/token/roles API; the tests write that same file into a real
# Vault. Break-glass roles cap a token at the environment's
# breakglass.max_ttl (here 1h).
locals {
  roles = jsondecode(file("${path.module}/token-roles.json"))
}

resource "vault_policy" "bot" {
  name   = "twokey-bot"
  policy = file("${path.module}/twokey-bot.hcl")
}

resource "vault_policy" "env" {
  for_each = toset(flatten([for r in local.roles : r.allowed_policies]))
  name     = each.key
  policy   = file("${path.module}/${each.key}.hcl")
}

resource "vault_token_auth_backend_role" "twokey" {
  for_each                = local.roles
  role_name               = each.key
  allowed_policies        = each.value.allowed_policies
  orphan                  = each.value.orphan
  renewable               = each.value.renewable
  token_explicit_max_ttl  = each.value.token_explicit_max_ttl
  token_no_default_policy = each.value.token_no_default_policy
}

# twokey logs in with AppRole; its secret ID is delivered to the pod out of band.
resource "vault_auth_backend" "approle" {
  type = "approle"
}

resource "vault_approle_auth_backend_role" "twokey" {
  backend        = vault_auth_backend.approle.path
  role_name      = "twokey"
  token_policies = [vault_policy.bot.name]
  token_ttl      = 3600
  token_max_ttl  = 14400
}

# With runner pools (runner.embedded: false), `twokey serve` holds no Vault
# login; each pool's workers log in with their own AppRole.
resource "vault_policy" "runner" {
  for_each = toset(["nonprod", "prod"])
  name     = "twokey-runner-${each.key}"
  policy   = file("${path.module}/twokey-runner-${each.key}.hcl")
}

resource "vault_approle_auth_backend_role" "runner" {
  for_each       = vault_policy.runner
  backend        = vault_auth_backend.approle.path
  role_name      = each.value.name
  token_policies = [each.value.name]
  token_ttl      = 3600
  token_max_ttl  = 14400
}
