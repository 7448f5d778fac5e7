# A Container Apps job of single-mode agents: KEDA's metrics-api rule reads the pool's queue
# depth and starts one execution per pending task; a managed identity reads the tokens from Key
# Vault and is the identity runs get (IDENTITY_ENDPOINT / IDENTITY_HEADER).

locals {
  reserved = ["SCALR_URL", "SCALR_AGENT_TOKEN", "SCALR_TOKEN", "SCALR_AGENT_TOKEN_FILE", "SCALR_AGENT_SINGLE", "SCALR_SINGLE",
  "SCALR_AGENT_CONCURRENCY", "SCALR_AGENT_DATA_DIR", "SCALR_AGENT_STATE_PERSISTENCE_ENABLED", "AZURE_CLIENT_ID"]
  env = merge(var.environment, {
    SCALR_URL                             = var.scalr_url
    SCALR_AGENT_SINGLE                    = "true"
    SCALR_AGENT_CONCURRENCY               = "1"
    SCALR_AGENT_DATA_DIR                  = "/var/lib/scalr-agent"
    SCALR_AGENT_STATE_PERSISTENCE_ENABLED = "false"
    # Which identity Azure SDKs and Terraform's azurerm provider pick from the managed identity
    # endpoint (a user-assigned identity must be named).
    AZURE_CLIENT_ID = azurerm_user_assigned_identity.agent.client_id
  })
}

resource "azurerm_user_assigned_identity" "agent" {
  name                = var.name
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_role_assignment" "tokens" {
  scope                = var.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.agent.principal_id
}

resource "azurerm_container_app_job" "single" {
  name                         = var.name
  resource_group_name          = var.resource_group_name
  location                     = var.location
  container_app_environment_id = var.container_app_environment_id
  # A task is never retried by the platform: the control plane decides.
  replica_retry_limit        = 0
  replica_timeout_in_seconds = var.replica_timeout_seconds
  tags                       = var.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.agent.id]
  }

  secret {
    name                = "pool-token"
    key_vault_secret_id = var.pool_token_secret_id
    identity            = azurerm_user_assigned_identity.agent.id
  }

  secret {
    name                = "queue-token"
    key_vault_secret_id = var.queue_token_secret_id
    identity            = azurerm_user_assigned_identity.agent.id
  }

  dynamic "registry" {
    for_each = var.registry_server == null ? [] : [var.registry_server]
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.agent.id
    }
  }

  event_trigger_config {
    parallelism              = 1
    replica_completion_count = 1
    scale {
      min_executions              = 0
      max_executions              = var.max_executions
      polling_interval_in_seconds = var.polling_interval_seconds
      rules {
        name             = "queue-depth"
        custom_rule_type = "metrics-api"
        metadata = {
          url           = "${trimsuffix(var.scalr_url, "/")}/api/agent/v1/queue"
          format        = "json"
          valueLocation = "pending"
          targetValue   = "1"
          authMode      = "bearer"
        }
        authentication {
          secret_name       = "queue-token"
          trigger_parameter = "token"
        }
      }
    }
  }

  template {
    container {
      name   = "agent"
      image  = var.image
      args   = ["run"]
      cpu    = var.cpu
      memory = var.memory
      env {
        name        = "SCALR_AGENT_TOKEN"
        secret_name = "pool-token"
      }
      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(setintersection(keys(var.environment), local.reserved)) == 0
      error_message = "environment may not set the module's own variables: ${join(", ", local.reserved)}."
    }
  }
  depends_on = [azurerm_role_assignment.tokens]
}
