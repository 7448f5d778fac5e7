variable "name" {
  description = "Name of the cluster, services, roles and log group (also the pool's metric dimension)."
  type        = string
  default     = "scalr-agent"
}

variable "image" {
  description = "The agent image, ideally by digest (registry/scalr-agent@sha256:...)."
  type        = string
}

variable "scalr_url" {
  description = "Control-plane URL (SCALR_URL)."
  type        = string
  validation {
    condition     = can(regex("^https?://", var.scalr_url))
    error_message = "scalr_url must be an http(s) URL."
  }
}

variable "pool_token_secret_arn" {
  description = "Secrets Manager secret holding the pool token (plain string). Reaches the agent as SCALR_AGENT_TOKEN through the task definition's secrets, never through Terraform state."
  type        = string
}

variable "queue_token_secret_arn" {
  description = "Secrets Manager secret holding the pool's queue token (read-only: cannot take tasks), read by the launcher Lambda."
  type        = string
}

variable "secrets_kms_key_arn" {
  description = "Customer-managed KMS key of the two secrets, if any (granted kms:Decrypt)."
  type        = string
  default     = null
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 (the image is multi-arch)."
  type        = string
  default     = "X86_64"
  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "cpu" {
  description = "Task CPU units (2048 = 2 vCPU, the reference size for one Terraform run)."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Task memory in MiB."
  type        = number
  default     = 4096
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage (21-200 GiB): data dir, provider and binary caches, /tmp."
  type        = number
  default     = 30
  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
  }
}

variable "concurrency" {
  description = "Task slots per always-on agent (SCALR_AGENT_CONCURRENCY); single-mode agents take one."
  type        = number
  default     = 1
}

variable "drain_timeout_seconds" {
  description = "SCALR_AGENT_WORKER_DRAIN_TIMEOUT of the always-on agents."
  type        = number
  default     = 60
}

variable "grace_timeout_seconds" {
  description = "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT."
  type        = number
  default     = 30
}

variable "report_timeout_seconds" {
  description = "SCALR_AGENT_WORKER_REPORT_TIMEOUT."
  type        = number
  default     = 10
}

variable "stop_margin_seconds" {
  description = "Added to drain + grace + report for the container's stopTimeout (the total must stay within Fargate's 120 s)."
  type        = number
  default     = 5
}

variable "task_role_policy_arns" {
  description = "IAM policies of the task role: the cloud access runs get (they inherit the task's role)."
  type        = list(string)
  default     = []
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (they need outbound HTTPS: NAT or VPC endpoints)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks (egress only)."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (public subnets without NAT)."
  type        = bool
  default     = false
}

variable "cluster_arn" {
  description = "Existing ECS cluster; null creates one."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 365
}

variable "log_kms_key_arn" {
  description = "KMS key encrypting the log group (null: CloudWatch's own encryption)."
  type        = string
  default     = null
}

variable "environment" {
  description = "More agent variables (SCALR_AGENT_*, HTTPS_PROXY, ...). The module's own names are refused."
  type        = map(string)
  default     = {}
}

variable "service_enabled" {
  description = "The always-on shape: an ECS service of agents scaled on TasksPerAgent."
  type        = bool
  default     = true
}

variable "service_min_agents" {
  description = "Lowest desired count of the service."
  type        = number
  default     = 1
}

variable "service_max_agents" {
  description = "Highest desired count of the service."
  type        = number
  default     = 10
}

variable "on_demand_enabled" {
  description = "The on-demand shape: the launcher Lambda starts one single-mode task per pending task."
  type        = bool
  default     = false
}

variable "on_demand_max_agents" {
  description = "Most single-mode tasks alive at once."
  type        = number
  default     = 10
}

variable "single_wait_timeout_seconds" {
  description = "SCALR_AGENT_SINGLE_WAIT_TIMEOUT: a single-mode task that finds no task exits after it."
  type        = number
  default     = 120
}

variable "launcher_poll_seconds" {
  description = "Launcher ticks within each one-minute invocation."
  type        = number
  default     = 15
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
