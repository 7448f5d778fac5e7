# The always-on shape: an ECS service of agents, scaled so that TasksPerAgent (pending + running
# over the desired count, published by the metrics Lambda) stays at the agents' concurrency.

resource "aws_ecs_service" "agents" {
  count                              = var.service_enabled ? 1 : 0
  name                               = var.name
  cluster                            = local.cluster_arn
  task_definition                    = aws_ecs_task_definition.agent["service"].arn
  desired_count                      = var.service_min_agents
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "TASK_DEFINITION"
  enable_execute_command             = false
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  lifecycle {
    ignore_changes = [desired_count]
  }
  tags = var.tags
}

resource "aws_appautoscaling_target" "agents" {
  count              = var.service_enabled ? 1 : 0
  service_namespace  = "ecs"
  resource_id        = "service/${element(split("/", local.cluster_arn), 1)}/${aws_ecs_service.agents[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.service_min_agents
  max_capacity       = var.service_max_agents
}

resource "aws_appautoscaling_policy" "tasks_per_agent" {
  count              = var.service_enabled ? 1 : 0
  name               = "${var.name}-tasks-per-agent"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.agents[0].service_namespace
  resource_id        = aws_appautoscaling_target.agents[0].resource_id
  scalable_dimension = aws_appautoscaling_target.agents[0].scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value = var.concurrency
    # Scale in slowly: a stopped agent drains, but an apply longer than the drain window is
    # interrupted (README.md, "Scale-in").
    scale_in_cooldown  = 600
    scale_out_cooldown = 60
    customized_metric_specification {
      namespace   = "ScalrAgent"
      metric_name = "TasksPerAgent"
      statistic   = "Average"
      unit        = "Count"
      dimensions {
        name  = "Pool"
        value = var.name
      }
    }
  }
}
