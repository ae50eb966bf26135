# Production audit bucket for Verdict. Copy this directory per environment.
#
#   terraform init && terraform plan -out plan && terraform apply plan
#
# The bucket cannot be destroyed while it holds locked versions (COMPLIANCE);
# the module sets `prevent_destroy`, so Terraform refuses to even try.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
  # Keep the state somewhere durable and access-controlled, e.g.:
  # backend "s3" {
  #   bucket         = "acme-terraform-state"
  #   key            = "verdict/production/audit-bucket.tfstate"
  #   region         = "eu-central-1"
  #   dynamodb_table = "terraform-locks"
  #   encrypt        = true
  # }
}

variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "bucket_name" {
  type    = string
  default = "acme-verdict-audit-production"
}

variable "admin_role_arns" {
  type    = list(string)
  default = []
}

variable "kms_break_glass_role_arn" {
  description = "The only role that may delete or disable the trail's KMS key or change its policy; apply as this role when the key is created."
  type        = string
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      application = "verdict"
      data-class  = "regulated-audit-trail"
    }
  }
}

module "audit_bucket" {
  source = "../../modules/audit-bucket"

  bucket_name              = var.bucket_name
  retention_days           = 2555 # seven years; equals the store's default retention_days
  minimum_retention_days   = 2554
  store_prefix             = "trail"
  admin_role_arns          = var.admin_role_arns
  kms_break_glass_role_arn = var.kms_break_glass_role_arn
}

output "store_url" {
  value = module.audit_bucket.store_url
}

output "writer_policy_arn" {
  value = module.audit_bucket.writer_policy_arn
}

output "prober_policy_arn" {
  value = module.audit_bucket.prober_policy_arn
}
