path "aws/creds/prod-deployer" {
  capabilities = ["read"]
}

# The Vault Terraform provider looks up its own token when it starts.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
