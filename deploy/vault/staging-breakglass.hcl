# What a break-glass token may do in staging (see prod-breakglass.hcl).
path "aws/creds/staging-breakglass" {
  capabilities = ["read"]
}

path "secret/data/staging/*" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
