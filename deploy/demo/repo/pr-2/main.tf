# PR #2: retire web v1 for web v2 and drop the old network zone count.
# It destroys something: look for the warning in the plan.
terraform {
  backend "local" {}
}

resource "terraform_data" "network" {
  input = { cidr = "10.20.0.0/16", zones = 2 }
}

resource "terraform_data" "database" {
  input      = { engine = "postgres", version = "16", size = "db.m7g.large" }
  depends_on = [terraform_data.network]
}

resource "terraform_data" "web_v2" {
  input      = { image = "registry.example/web:2.0", replicas = 3 }
  depends_on = [terraform_data.database]
}

output "web_image" {
  value = terraform_data.web_v2.output.image
}
