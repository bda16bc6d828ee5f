# PR #1: put a cache in front of the web tier and scale it out. Harmless.
terraform {
  backend "local" {}
}

resource "terraform_data" "network" {
  input = { cidr = "10.20.0.0/16", zones = 3 }
}

resource "terraform_data" "database" {
  input      = { engine = "postgres", version = "16", size = "db.m7g.large" }
  depends_on = [terraform_data.network]
}

resource "terraform_data" "cache" {
  input      = { engine = "valkey", nodes = 2 }
  depends_on = [terraform_data.network]
}

resource "terraform_data" "web_v1" {
  input      = { image = "registry.example/web:1.41", replicas = 4 }
  depends_on = [terraform_data.database, terraform_data.cache]
}

output "web_image" {
  value = terraform_data.web_v1.output.image
}
