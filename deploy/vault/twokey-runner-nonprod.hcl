# Login policy of `twokey runner --pool nonprod`: it can mint child tokens on
# the non-production token roles only, so a non-prod worker can never apply
# to prod, whatever job reaches it.
path "auth/token/create/twokey-staging-*" {
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
