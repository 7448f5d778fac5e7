variable "project" {
  description = "Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region of the job, service, function and scheduler."
  type        = string
}

variable "name" {
  description = "Name of the job, service, service accounts and function."
  type        = string
  default     = "scalr-agent"
}

variable "image" {
  description = "The agent image in Artifact Registry (amd64: Cloud Run runs linux/amd64), ideally by digest."
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

variable "pool_token_secret_id" {
  description = "Secret Manager secret (id or projects/*/secrets/*) holding the pool token; the agent gets it as SCALR_AGENT_TOKEN."
  type        = string
}

variable "queue_token_secret_id" {
  description = "Secret Manager secret holding the pool's queue token (read-only), mounted into the launcher."
  type        = string
}

variable "job_enabled" {
  description = "The on-demand shape: a single-mode Cloud Run job, started by the launcher function per pending task."
  type        = bool
  default     = true
}

variable "service_enabled" {
  description = "The always-on shape: a Cloud Run service of service_agents agents, CPU always allocated."
  type        = bool
  default     = false
}

variable "service_agents" {
  description = "Instances of the always-on service (fixed: Cloud Run does not scale services on a queue)."
  type        = number
  default     = 1
}

variable "concurrency" {
  description = "Task slots per always-on agent (SCALR_AGENT_CONCURRENCY)."
  type        = number
  default     = 1
}

variable "max_agents" {
  description = "Most single-mode job tasks alive at once."
  type        = number
  default     = 10
}

variable "task_timeout_seconds" {
  description = "Timeout of one job task (one run stage), at most 168 h."
  type        = number
  default     = 3600
}

variable "cpu" {
  description = "CPU of each agent."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory of each agent. Cloud Run's filesystem is in memory: the data dir, providers and binaries count against it (8Gi for runs with large providers)."
  type        = string
  default     = "8Gi"
}

variable "environment" {
  description = "More agent variables (SCALR_AGENT_*, HTTPS_PROXY, ...). The module's own names are refused."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels of every resource that takes them."
  type        = map(string)
  default     = {}
}
