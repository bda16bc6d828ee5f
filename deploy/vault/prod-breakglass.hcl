# What an on-call engineer's break-glass token may do in production: enough
# to repair by hand what is on fire, for at most breakglass.max_ttl. It is
# minted only through the twokey-prod-breakglass token role, delivered
# response-wrapped, announced in the security channel and reviewed after.
path "aws/creds/prod-breakglass" {
  capabilities = ["read"]
}

path "secret/data/prod/*" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
