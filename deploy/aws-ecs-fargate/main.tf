# The agent's task definitions (always-on and single mode), its roles, logs and cluster.

data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  # The agent's own window on SIGTERM plus a margin; Fargate allows at most 120 s.
  stop_timeout = var.drain_timeout_seconds + var.grace_timeout_seconds + var.report_timeout_seconds + var.stop_margin_seconds
  cluster_arn  = var.cluster_arn != null ? var.cluster_arn : aws_ecs_cluster.this[0].arn
  # Names the module sets itself; var.environment may not repeat them.
  reserved = ["SCALR_URL", "SCALR_AGENT_TOKEN", "SCALR_TOKEN", "SCALR_AGENT_TOKEN_FILE", "SCALR_AGENT_SINGLE", "SCALR_SINGLE",
    "SCALR_AGENT_CONCURRENCY", "SCALR_AGENT_DATA_DIR", "SCALR_AGENT_HEALTH_ADDR", "SCALR_AGENT_WORKER_ON_STOP_ACTION",
    "SCALR_AGENT_WORKER_DRAIN_TIMEOUT", "SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT", "SCALR_AGENT_WORKER_REPORT_TIMEOUT",
  "SCALR_AGENT_STATE_PERSISTENCE_ENABLED", "SCALR_AGENT_SINGLE_WAIT_TIMEOUT"]
  common_env = {
    SCALR_URL                                 = var.scalr_url
    SCALR_AGENT_DATA_DIR                      = "/var/lib/scalr-agent"
    SCALR_AGENT_WORKER_ON_STOP_ACTION         = "drain"
    SCALR_AGENT_WORKER_DRAIN_TIMEOUT          = "${var.drain_timeout_seconds}s"
    SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT = "${var.grace_timeout_seconds}s"
    SCALR_AGENT_WORKER_REPORT_TIMEOUT         = "${var.report_timeout_seconds}s"
  }
  shapes = {
    service = merge(local.common_env, var.environment, {
      SCALR_AGENT_CONCURRENCY = tostring(var.concurrency)
      SCALR_AGENT_HEALTH_ADDR = "127.0.0.1:9090"
    })
    single = merge(local.common_env, var.environment, {
      SCALR_AGENT_CONCURRENCY               = "1"
      SCALR_AGENT_SINGLE                    = "true"
      SCALR_AGENT_SINGLE_WAIT_TIMEOUT       = "${var.single_wait_timeout_seconds}s"
      SCALR_AGENT_STATE_PERSISTENCE_ENABLED = "false"
    })
  }
  enabled_shapes = { for k, v in local.shapes : k => v if(k == "service" ? var.service_enabled : var.on_demand_enabled) }
  health_check   = "\"healthCheck\": {\"command\": [\"CMD-SHELL\", \"curl -fsS http://127.0.0.1:9090/healthz || exit 1\"], \"interval\": 30, \"timeout\": 5, \"retries\": 3, \"startPeriod\": 30},"
}

resource "aws_ecs_cluster" "this" {
  count = var.cluster_arn == null ? 1 : 0
  name  = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "agent" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Pulls the image, writes logs, reads the pool token for the container's secrets.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.pool_token_secret_arn]
  }
  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "pool-token"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# The role runs get: stages inherit the task's credentials (README.md, "Identity of runs").
resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "task" {
  for_each   = toset(var.task_role_policy_arns)
  role       = aws_iam_role.task.name
  policy_arn = each.value
}

resource "aws_ecs_task_definition" "agent" {
  for_each                 = local.enabled_shapes
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions = templatefile("${path.module}/templates/container.json.tftpl", {
    image                 = var.image
    stop_timeout          = local.stop_timeout
    environment           = jsonencode([for k in sort(keys(each.value)) : { name = k, value = each.value[k] }])
    pool_token_secret_arn = var.pool_token_secret_arn
    health_check          = each.key == "service" ? local.health_check : ""
    log_group             = aws_cloudwatch_log_group.agent.name
    region                = data.aws_region.current.name
    stream_prefix         = each.key
  })
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }
  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }
  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }
  tags = var.tags

  lifecycle {
    precondition {
      condition     = local.stop_timeout <= 120
      error_message = "drain + grace + report + margin must fit Fargate's 120 s stopTimeout."
    }
    precondition {
      condition     = length(setintersection(keys(var.environment), local.reserved)) == 0
      error_message = "environment may not set the module's own variables: ${join(", ", local.reserved)}."
    }
  }
}
