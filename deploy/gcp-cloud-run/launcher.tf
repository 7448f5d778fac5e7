# The launcher: a Cloud Function (function/main.py plus deploy/launcher/scalr_launcher) that
# Cloud Scheduler calls every minute; it starts job executions for pending tasks.

locals {
  launcher_sources = ["__init__.py", "core.py", "cloudrun.py"]
  launcher_count   = var.job_enabled ? 1 : 0
}

data "archive_file" "launcher" {
  type        = "zip"
  output_path = "${path.module}/.build/launcher.zip"
  source {
    filename = "main.py"
    content  = file("${path.module}/function/main.py")
  }
  source {
    filename = "requirements.txt"
    content  = "# standard library only\n"
  }
  dynamic "source" {
    for_each = toset(local.launcher_sources)
    content {
      filename = "scalr_launcher/${source.value}"
      content  = file("${path.module}/../launcher/scalr_launcher/${source.value}")
    }
  }
}

resource "google_service_account" "launcher" {
  count        = local.launcher_count
  project      = var.project
  account_id   = "${var.name}-launcher"
  display_name = "scalr-agent launcher"
}

resource "google_cloud_run_v2_job_iam_member" "launcher_runs_job" {
  count    = local.launcher_count
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_job.single[0].name
  role     = "roles/run.developer" # run with a task-count override, list executions
  member   = "serviceAccount:${google_service_account.launcher[0].email}"
}

resource "google_service_account_iam_member" "launcher_acts_as_agent" {
  count              = local.launcher_count
  service_account_id = google_service_account.agent.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.launcher[0].email}"
}

resource "google_secret_manager_secret_iam_member" "queue_token" {
  count     = local.launcher_count
  project   = var.project
  secret_id = var.queue_token_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.launcher[0].email}"
}

resource "google_storage_bucket" "launcher" {
  #checkov:skip=CKV_GCP_62:access logs of a bucket that only holds the launcher's code zip are not needed
  count                       = local.launcher_count
  project                     = var.project
  name                        = "${var.project}-${var.name}-launcher"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = var.labels
  versioning {
    enabled = true
  }
}

resource "google_storage_bucket_object" "launcher" {
  count  = local.launcher_count
  name   = "launcher-${data.archive_file.launcher.output_md5}.zip"
  bucket = google_storage_bucket.launcher[0].name
  source = data.archive_file.launcher.output_path
}

resource "google_cloudfunctions2_function" "launcher" {
  count    = local.launcher_count
  project  = var.project
  location = var.region
  name     = "${var.name}-launcher"
  labels   = var.labels
  build_config {
    runtime     = "python312"
    entry_point = "launch"
    source {
      storage_source {
        bucket = google_storage_bucket.launcher[0].name
        object = google_storage_bucket_object.launcher[0].name
      }
    }
  }
  service_config {
    service_account_email            = google_service_account.launcher[0].email
    available_memory                 = "256M"
    timeout_seconds                  = 60
    max_instance_count               = 1 # one tick at a time
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    environment_variables = {
      SCALR_URL        = var.scalr_url
      QUEUE_TOKEN_FILE = "/secrets/queue/token"
      PROJECT          = var.project
      REGION           = var.region
      JOB              = google_cloud_run_v2_job.single[0].name
      MAX_AGENTS       = tostring(var.max_agents)
    }
    secret_volumes {
      mount_path = "/secrets/queue"
      project_id = var.project
      secret     = var.queue_token_secret_id
      versions {
        version = "latest"
        path    = "token"
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.queue_token]
}

resource "google_service_account" "scheduler" {
  count        = local.launcher_count
  project      = var.project
  account_id   = "${var.name}-scheduler"
  display_name = "scalr-agent launcher scheduler"
}

resource "google_cloud_run_service_iam_member" "scheduler_invokes_launcher" {
  count    = local.launcher_count
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.launcher[0].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler[0].email}"
}

resource "google_cloud_scheduler_job" "launcher" {
  count     = local.launcher_count
  project   = var.project
  region    = var.region
  name      = "${var.name}-launcher"
  schedule  = "* * * * *"
  time_zone = "Etc/UTC"
  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.launcher[0].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.scheduler[0].email
      audience              = google_cloudfunctions2_function.launcher[0].service_config[0].uri
    }
  }
}
