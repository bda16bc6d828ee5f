path "aws/creds/prod-readonly" {
  capabilities = ["read"]
}

# The Vault Terraform provider looks up its own token when it starts.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
