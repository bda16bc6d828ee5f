path "aws/creds/prod-deployer" {
  capabilities = ["read"]
}
