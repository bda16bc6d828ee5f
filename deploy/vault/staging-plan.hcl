# What a plan of staging may read: read-only cloud credentials. Plans run
# code from pull requests, so they never get write credentials.
path "aws/creds/staging-readonly" {
  capabilities = ["read"]
}

# The Vault Terraform provider looks up its own token when it starts.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
