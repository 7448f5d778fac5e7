# A configuration without providers: it plans and applies offline.
variable "greeting" {
  type = string
}

variable "replicas" {
  type = number
}

variable "tags" {
  type = map(string)
}

variable "SCALR_RUN_ID" {
  type = string
}

locals {
  message = "${var.greeting} from run ${var.SCALR_RUN_ID}"
}

output "message" {
  value = local.message
}

output "double" {
  value = var.replicas * 2
}

output "owner" {
  value = var.tags["owner"]
}
