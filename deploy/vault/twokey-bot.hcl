# Policy for twokey's own Vault login (AppRole or token). It can mint child
# tokens on the twokey token roles and revoke them by accessor — nothing else.
# It cannot read a single secret itself.
path "auth/token/create/twokey-*" {
  capabilities = ["update"]
}

path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
