output "agent_service_account" {
  description = "The identity of the agents and their runs; grant it what runs need."
  value       = google_service_account.agent.email
}

output "job_name" {
  description = "The single-mode job (null when job_enabled is false)."
  value       = var.job_enabled ? google_cloud_run_v2_job.single[0].name : null
}

output "service_name" {
  description = "The always-on service (null when service_enabled is false)."
  value       = var.service_enabled ? google_cloud_run_v2_service.agents[0].name : null
}
