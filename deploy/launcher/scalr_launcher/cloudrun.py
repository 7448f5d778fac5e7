"""Runner for Google Cloud Run jobs: `jobs.run` with a task count, over the Cloud Run Admin API
v2 (plain HTTPS; the access token comes from the metadata server)."""

import json
import urllib.error
import urllib.request

API = "https://run.googleapis.com/v2"
METADATA_TOKEN = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"


class CloudRunError(Exception):
    pass


def metadata_token(opener=urllib.request.urlopen, url=METADATA_TOKEN) -> str:
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with opener(request, timeout=5) as response:
        return json.loads(response.read())["access_token"]


class CloudRunRunner:
    def __init__(self, project, region, job, token=metadata_token, opener=urllib.request.urlopen, api=API):
        self.job = f"{api}/projects/{project}/locations/{region}/jobs/{job}"
        self.token = token
        self.opener = opener

    def _call(self, method, url, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        try:
            with self.opener(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise CloudRunError(f"{method} {url}: HTTP {e.code}: {e.read()[:200]!r}") from None

    def alive(self) -> int:
        """Tasks of executions not yet completed that neither succeeded, failed nor were
        cancelled."""
        count, page = 0, ""
        while True:
            answer = self._call("GET", f"{self.job}/executions?pageSize=100" + (f"&pageToken={page}" if page else ""))
            for e in answer.get("executions", []):
                if e.get("completionTime"):
                    continue
                done = sum(e.get(k, 0) for k in ("succeededCount", "failedCount", "cancelledCount"))
                count += max(0, e.get("taskCount", 0) - done)
            page = answer.get("nextPageToken", "")
            if not page:
                return count

    def start(self, count: int) -> int:
        self._call("POST", f"{self.job}:run", {"overrides": {"taskCount": count}})
        return count
