# Login policy of `twokey runner --pool prod`: production token roles only.
path "auth/token/create/twokey-prod-*" {
  capabilities = ["update"]
}

path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# Break-glass: confirm an emergency token is gone after it expires or is
# revoked.
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
