variable "name" {
  description = "Name of the job and its identity."
  type        = string
  default     = "scalr-agent"
}

variable "resource_group_name" {
  description = "Resource group of the job and identity."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "container_app_environment_id" {
  description = "The Container Apps environment (workload profile Consumption, with outbound HTTPS)."
  type        = string
}

variable "image" {
  description = "The agent image (amd64), ideally by digest."
  type        = string
}

variable "registry_server" {
  description = "Registry of the image pulled with the job's identity (e.g. example.azurecr.io; grant it AcrPull); null for a public image."
  type        = string
  default     = null
}

variable "scalr_url" {
  description = "Control-plane URL (SCALR_URL)."
  type        = string
  validation {
    condition     = can(regex("^https?://", var.scalr_url))
    error_message = "scalr_url must be an http(s) URL."
  }
}

variable "key_vault_id" {
  description = "Key Vault holding both tokens (the identity gets Key Vault Secrets User on it)."
  type        = string
}

variable "pool_token_secret_id" {
  description = "Key Vault secret id (versionless URL) of the pool token."
  type        = string
}

variable "queue_token_secret_id" {
  description = "Key Vault secret id (versionless URL) of the pool's queue token (read-only), used by the scale rule."
  type        = string
}

variable "max_executions" {
  description = "Most single-mode executions at once."
  type        = number
  default     = 10
}

variable "polling_interval_seconds" {
  description = "How often the scale rule reads the queue depth."
  type        = number
  default     = 15
}

variable "replica_timeout_seconds" {
  description = "Longest run of one execution (one task)."
  type        = number
  default     = 7200
}

variable "cpu" {
  description = "vCPU of each agent (Consumption: 2 vCPU goes with 4Gi)."
  type        = number
  default     = 2
}

variable "memory" {
  description = "Memory of each agent."
  type        = string
  default     = "4Gi"
}

variable "environment" {
  description = "More agent variables (SCALR_AGENT_*, HTTPS_PROXY, ...). The module's own names are refused."
  type        = map(string)
  default     = {}
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
