# Policy for twokey's own Vault login (AppRole or token). It can mint child
# tokens on the twokey token roles, look them up and revoke them by accessor —
# nothing else.
# It cannot read a single secret itself.
path "auth/token/create/twokey-*" {
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
