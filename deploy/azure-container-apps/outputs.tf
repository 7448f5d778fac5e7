output "identity_principal_id" {
  description = "The managed identity of the agents and their runs; give it the roles runs need."
  value       = azurerm_user_assigned_identity.agent.principal_id
}

output "identity_client_id" {
  description = "Its client id (AZURE_CLIENT_ID in the runs)."
  value       = azurerm_user_assigned_identity.agent.client_id
}

output "job_name" {
  description = "The Container Apps job."
  value       = azurerm_container_app_job.single.name
}
