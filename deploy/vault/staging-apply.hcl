# What an apply to staging may read: the deployer role's dynamic AWS
# credentials and the staging KV secrets. Attached only to child tokens
# minted from the twokey-staging-apply token role after two approvals.
path "aws/creds/staging-deployer" {
  capabilities = ["read"]
}

path "secret/data/staging/*" {
  capabilities = ["read"]
}

# The Vault Terraform provider looks up its own token when it starts.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
