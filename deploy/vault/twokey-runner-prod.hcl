# Login policy of `twokey runner --pool prod`: production token roles only.
path "auth/token/create/twokey-prod-*" {
  capabilities = ["update"]
}

path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
