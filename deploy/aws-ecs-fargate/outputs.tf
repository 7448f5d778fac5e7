output "cluster_arn" {
  description = "The ECS cluster of the agents."
  value       = local.cluster_arn
}

output "task_definition_arns" {
  description = "Task definitions by shape (service, single)."
  value       = { for k, v in aws_ecs_task_definition.agent : k => v.arn }
}

output "task_role_arn" {
  description = "The role runs get; attach more policies to it."
  value       = aws_iam_role.task.arn
}

output "stop_timeout" {
  description = "The container's stopTimeout (drain + grace + report + margin)."
  value       = local.stop_timeout
}
