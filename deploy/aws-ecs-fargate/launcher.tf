# The launcher Lambda: MODE=launch (on-demand single-mode tasks) and MODE=metrics (the service's
# scaling metric), each run every minute by EventBridge. Its code is lambda/handler.py plus the
# shared deploy/launcher/scalr_launcher package.

locals {
  launcher_modes = merge(
    var.on_demand_enabled ? { launch = "launch" } : {},
    var.service_enabled ? { metrics = "metrics" } : {},
  )
  launcher_sources = ["__init__.py", "core.py", "ecs.py"]
}

data "archive_file" "launcher" {
  type        = "zip"
  output_path = "${path.module}/.build/launcher.zip"
  source {
    filename = "handler.py"
    content  = file("${path.module}/lambda/handler.py")
  }
  dynamic "source" {
    for_each = toset(local.launcher_sources)
    content {
      filename = "scalr_launcher/${source.value}"
      content  = file("${path.module}/../launcher/scalr_launcher/${source.value}")
    }
  }
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "launcher" {
  count              = length(local.launcher_modes) > 0 ? 1 : 0
  name               = "${var.name}-launcher"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "launcher_logs" {
  count      = length(local.launcher_modes) > 0 ? 1 : 0
  role       = aws_iam_role.launcher[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
}

data "aws_iam_policy_document" "launcher" {
  statement {
    sid       = "QueueToken"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.queue_token_secret_arn]
  }
  dynamic "statement" {
    for_each = var.secrets_kms_key_arn == null ? [] : [var.secrets_kms_key_arn]
    content {
      sid       = "QueueTokenKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
  statement {
    sid       = "ListOwnTasks"
    actions   = ["ecs:ListTasks", "ecs:DescribeServices"]
    resources = ["*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }
  dynamic "statement" {
    for_each = var.on_demand_enabled ? [1] : []
    content {
      sid       = "RunSingleModeTasks"
      actions   = ["ecs:RunTask"]
      resources = [replace(aws_ecs_task_definition.agent["single"].arn, "/:\\d+$/", ":*")]
      condition {
        test     = "ArnEquals"
        variable = "ecs:cluster"
        values   = [local.cluster_arn]
      }
    }
  }
  dynamic "statement" {
    for_each = var.on_demand_enabled ? [1] : []
    content {
      sid       = "PassTaskRoles"
      actions   = ["iam:PassRole"]
      resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
    }
  }
  statement {
    sid       = "PublishQueueMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["ScalrAgent"]
    }
  }
}

resource "aws_iam_role_policy" "launcher" {
  count  = length(local.launcher_modes) > 0 ? 1 : 0
  name   = "launcher"
  role   = aws_iam_role.launcher[0].id
  policy = data.aws_iam_policy_document.launcher.json
}

resource "aws_cloudwatch_log_group" "launcher" {
  for_each          = local.launcher_modes
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "launcher" {
  for_each = local.launcher_modes
  #checkov:skip=CKV_AWS_117:the launcher calls the control plane on the Internet and AWS APIs; put it in a VPC with NAT by adding vpc_config if your policy requires
  #checkov:skip=CKV_AWS_116:a scheduled tick needs no dead-letter queue: the next minute retries
  #checkov:skip=CKV_AWS_173:the environment holds no secret (the queue token is read from Secrets Manager)
  #checkov:skip=CKV_AWS_272:code signing needs a signing profile of your own; the code is built from this repository
  function_name                  = "${var.name}-${each.key}"
  role                           = aws_iam_role.launcher[0].arn
  runtime                        = "python3.12"
  handler                        = "handler.handler"
  architectures                  = ["arm64"]
  filename                       = data.archive_file.launcher.output_path
  source_code_hash               = data.archive_file.launcher.output_base64sha256
  timeout                        = 60
  memory_size                    = 128
  reserved_concurrent_executions = 1 # one tick at a time: two would both start agents for the same tasks
  tracing_config {
    mode = "Active"
  }
  environment {
    variables = {
      MODE                   = each.value
      SCALR_URL              = var.scalr_url
      QUEUE_TOKEN_SECRET_ARN = var.queue_token_secret_arn
      CLUSTER                = local.cluster_arn
      SERVICE                = var.service_enabled ? aws_ecs_service.agents[0].name : ""
      POOL                   = var.name
      TASK_DEFINITION        = var.on_demand_enabled ? aws_ecs_task_definition.agent["single"].arn : ""
      SUBNETS                = join(",", var.subnet_ids)
      SECURITY_GROUPS        = join(",", var.security_group_ids)
      ASSIGN_PUBLIC_IP       = tostring(var.assign_public_ip)
      MAX_AGENTS             = tostring(var.on_demand_max_agents)
      POLL_SECONDS           = tostring(var.launcher_poll_seconds)
    }
  }
  depends_on = [aws_cloudwatch_log_group.launcher, aws_iam_role_policy.launcher]
  tags       = var.tags
}

resource "aws_cloudwatch_event_rule" "launcher" {
  for_each            = local.launcher_modes
  name                = "${var.name}-${each.key}"
  schedule_expression = "rate(1 minute)"
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "launcher" {
  for_each = local.launcher_modes
  rule     = aws_cloudwatch_event_rule.launcher[each.key].name
  arn      = aws_lambda_function.launcher[each.key].arn
}

resource "aws_lambda_permission" "launcher" {
  for_each      = local.launcher_modes
  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.launcher[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.launcher[each.key].arn
}
