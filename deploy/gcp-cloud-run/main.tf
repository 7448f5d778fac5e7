# The agent's identity and its two shapes: a single-mode job (on demand) and an always-on service.

locals {
  reserved = ["SCALR_URL", "SCALR_AGENT_TOKEN", "SCALR_TOKEN", "SCALR_AGENT_TOKEN_FILE", "SCALR_AGENT_SINGLE", "SCALR_SINGLE",
    "SCALR_AGENT_CONCURRENCY", "SCALR_AGENT_DATA_DIR", "SCALR_AGENT_HEALTH_ADDR", "SCALR_AGENT_STATE_PERSISTENCE_ENABLED",
  "SCALR_AGENT_SINGLE_WAIT_TIMEOUT", "PORT"]
  # On Cloud Run the agent picks its own stop window (0 s drain, 4 s grace, 4 s report) to fit
  # the 10 s between SIGTERM and SIGKILL.
  common_env = merge(var.environment, {
    SCALR_URL            = var.scalr_url
    SCALR_AGENT_DATA_DIR = "/var/lib/scalr-agent"
  })
  job_env = merge(local.common_env, {
    SCALR_AGENT_SINGLE                    = "true"
    SCALR_AGENT_CONCURRENCY               = "1"
    SCALR_AGENT_STATE_PERSISTENCE_ENABLED = "false"
  })
  # The health listener: Cloud Run sets PORT to the container port it routes and probes (8080),
  # and the agent, with K_SERVICE set and no SCALR_AGENT_HEALTH_ADDR, serves /healthz there.
  service_env = merge(local.common_env, {
    SCALR_AGENT_CONCURRENCY = tostring(var.concurrency)
  })
}

resource "terraform_data" "checks" {
  lifecycle {
    precondition {
      condition     = length(setintersection(keys(var.environment), local.reserved)) == 0
      error_message = "environment may not set the module's own variables: ${join(", ", local.reserved)}."
    }
  }
}

# The identity of the agents and of their runs (stages reach Google APIs through the metadata
# server as this account).
resource "google_service_account" "agent" {
  project      = var.project
  account_id   = var.name
  display_name = "scalr-agent runs"
}

resource "google_secret_manager_secret_iam_member" "pool_token" {
  project   = var.project
  secret_id = var.pool_token_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.agent.email}"
}

resource "google_cloud_run_v2_job" "single" {
  count               = var.job_enabled ? 1 : 0
  project             = var.project
  location            = var.region
  name                = "${var.name}-single"
  labels              = var.labels
  deletion_protection = false
  template {
    task_count  = 1
    parallelism = 0
    template {
      service_account       = google_service_account.agent.email
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
      # A task is never retried by Cloud Run (the default is 3): the control plane decides.
      max_retries = 0
      timeout     = "${var.task_timeout_seconds}s"
      containers {
        image = var.image
        args  = ["run"]
        dynamic "env" {
          for_each = local.job_env
          content {
            name  = env.key
            value = env.value
          }
        }
        env {
          name = "SCALR_AGENT_TOKEN"
          value_source {
            secret_key_ref {
              secret  = var.pool_token_secret_id
              version = "latest"
            }
          }
        }
        resources {
          limits = {
            cpu    = var.cpu
            memory = var.memory
          }
        }
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.pool_token, terraform_data.checks]
}

resource "google_cloud_run_v2_service" "agents" {
  count               = var.service_enabled ? 1 : 0
  project             = var.project
  location            = var.region
  name                = var.name
  labels              = var.labels
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false
  template {
    service_account       = google_service_account.agent.email
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    scaling {
      min_instance_count = var.service_agents
      max_instance_count = var.service_agents
    }
    containers {
      image = var.image
      args  = ["run"]
      ports {
        container_port = 8080
      }
      dynamic "env" {
        for_each = local.service_env
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "SCALR_AGENT_TOKEN"
        value_source {
          secret_key_ref {
            secret  = var.pool_token_secret_id
            version = "latest"
          }
        }
      }
      resources {
        # CPU always allocated: the agent works between requests (it receives none).
        cpu_idle          = false
        startup_cpu_boost = true
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
      }
      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
      liveness_probe {
        period_seconds    = 10
        failure_threshold = 6
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.pool_token, terraform_data.checks]
}
