path "aws/creds/prod-readonly" {
  capabilities = ["read"]
}
