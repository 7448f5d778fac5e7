//! The built-in rules of each vendor: the API calls a control plane needs and git smart-HTTP
//! clone/fetch (`info/refs?service=git-upload-pack` and `POST …/git-upload-pack`, never
//! `git-receive-pack`). Versioned by [`PRESET_VERSION`]: a refused request's log line names it,
//! so an endpoint the control plane started using is recognisable as drift.
//!
//! Patterns are anchored by [`super::rules::anchored`]; dots are escaped; project parts are
//! the groups `p1`..`p3`. GraphQL is not in any preset (a single endpoint for everything,
//! which no project check can cover): an operator adds it in the rules file if needed.

use reqwest::Method;

use super::rules::{Origin, QueryRule, Rule, RuleError};
use super::settings::Vendor;

/// The presets' version, logged at start and in every refusal by the allowlist.
pub const PRESET_VERSION: &str = "2026.1";

/// How a preset rule checks the query.
#[derive(Clone, Copy)]
enum Q {
    Any,
    UploadPack,
}

type Spec = (&'static str, &'static str, &'static str, Q);

const SEG: &str = "[^/]+";

/// `{repo}` in GitHub Enterprise paths.
const GHE_REPO: &str = "/api/v3/repos/(?P<p1>[^/]+)/(?P<p2>[^/]+)";
const GHE: &[Spec] = &[
    (
        "compare",
        "GET",
        "{repo}/compare/[^/]+\\.\\.\\.[^/]+",
        Q::Any,
    ),
    ("get commit", "GET", "{repo}/commits/{seg}", Q::Any),
    (
        "create commit status",
        "POST",
        "{repo}/statuses/[0-9a-f]{40}",
        Q::Any,
    ),
    ("create check run", "POST", "{repo}/check-runs", Q::Any),
    ("list deployments", "GET", "{repo}/deployments", Q::Any),
    ("create deployment", "POST", "{repo}/deployments", Q::Any),
    (
        "create deployment status",
        "POST",
        "{repo}/deployments/[0-9]+/statuses",
        Q::Any,
    ),
    (
        "delete deployment",
        "DELETE",
        "{repo}/deployments/[0-9]+",
        Q::Any,
    ),
    ("get pull request", "GET", "{repo}/pulls/[0-9]+", Q::Any),
    (
        "list pull request files",
        "GET",
        "{repo}/pulls/[0-9]+/files",
        Q::Any,
    ),
    ("get repository", "GET", "{repo}", Q::Any),
    ("repository tarball", "GET", "{repo}/tarball/{seg}", Q::Any),
    (
        "codeload tarball",
        "GET",
        "/_codeload/(?P<p1>[^/]+)/(?P<p2>[^/]+)/legacy\\.tar\\.gz/{seg}",
        Q::Any,
    ),
    (
        "installation token",
        "POST",
        "/api/v3/app/installations/[0-9]+/access_tokens",
        Q::Any,
    ),
    (
        "list installations",
        "GET",
        "/api/v3/app/installations",
        Q::Any,
    ),
    ("get app", "GET", "/api/v3/app", Q::Any),
    ("get user", "GET", "/api/v3/users/{seg}", Q::Any),
    (
        "git info/refs",
        "GET",
        "/(?P<p1>[^/]+)/(?P<p2>[^/]+)\\.git/info/refs",
        Q::UploadPack,
    ),
    (
        "git upload-pack",
        "POST",
        "/(?P<p1>[^/]+)/(?P<p2>[^/]+)\\.git/git-upload-pack",
        Q::Any,
    ),
];

/// `{repo}` in GitLab API paths: one segment, `%2F`-encoded groups allowed.
const GITLAB_REPO: &str = "/api/v4/projects/(?P<p1>[^/]+)";
const GITLAB: &[Spec] = &[
    ("api root", "GET", "/api/v4/?", Q::Any),
    ("current user", "GET", "/api/v4/user", Q::Any),
    ("list projects", "GET", "/api/v4/projects", Q::Any),
    ("get project", "GET", "{repo}", Q::Any),
    ("list branches", "GET", "{repo}/repository/branches", Q::Any),
    (
        "get branch",
        "GET",
        "{repo}/repository/branches/{seg}",
        Q::Any,
    ),
    (
        "get commit",
        "GET",
        "{repo}/repository/commits/[0-9a-f]{40}",
        Q::Any,
    ),
    ("compare", "GET", "{repo}/repository/compare", Q::Any),
    (
        "archive",
        "GET",
        "{repo}/repository/archive(?:\\.(?:tar\\.gz|tar\\.bz2|tar|zip))?",
        Q::Any,
    ),
    (
        "set commit status",
        "POST",
        "{repo}/statuses/[0-9a-f]{40}",
        Q::Any,
    ),
    ("list environments", "GET", "{repo}/environments", Q::Any),
    ("create environment", "POST", "{repo}/environments", Q::Any),
    (
        "stop environment",
        "POST",
        "{repo}/environments/[0-9]+/stop",
        Q::Any,
    ),
    (
        "delete environment",
        "DELETE",
        "{repo}/environments/[0-9]+",
        Q::Any,
    ),
    ("create deployment", "POST", "{repo}/deployments", Q::Any),
    (
        "update deployment",
        "PUT",
        "{repo}/deployments/[0-9]+",
        Q::Any,
    ),
    (
        "list merge requests",
        "GET",
        "{repo}/merge_requests",
        Q::Any,
    ),
    (
        "get merge request",
        "GET",
        "{repo}/merge_requests/[0-9]+",
        Q::Any,
    ),
    (
        "merge request approvals",
        "GET",
        "{repo}/merge_requests/[0-9]+/approvals",
        Q::Any,
    ),
    (
        "merge requests of commit",
        "GET",
        "{repo}/repository/commits/{seg}/merge_requests",
        Q::Any,
    ),
    (
        "create merge request note",
        "POST",
        "{repo}/merge_requests/[0-9]+/notes",
        Q::Any,
    ),
    (
        "update merge request note",
        "PUT",
        "{repo}/merge_requests/[0-9]+/notes/[0-9]+",
        Q::Any,
    ),
    (
        "git info/refs",
        "GET",
        "/(?P<p1>[^/]+(?:/[^/]+)+)\\.git/info/refs",
        Q::UploadPack,
    ),
    (
        "git upload-pack",
        "POST",
        "/(?P<p1>[^/]+(?:/[^/]+)+)\\.git/git-upload-pack",
        Q::Any,
    ),
];

/// `{repo}` in Bitbucket Data Center API paths.
const BB_REPO: &str = "/rest/api/(?:1\\.0|latest)/projects/(?P<p1>[^/]+)/repos/(?P<p2>[^/]+)";
const BITBUCKET: &[Spec] = &[
    (
        "get user",
        "GET",
        "/rest/api/(?:1\\.0|latest)/users/{seg}",
        Q::Any,
    ),
    (
        "list repositories",
        "GET",
        "/rest/api/(?:1\\.0|latest)/repos",
        Q::Any,
    ),
    ("get repository", "GET", "{repo}", Q::Any),
    ("list branches", "GET", "{repo}/branches", Q::Any),
    ("get commit", "GET", "{repo}/commits/{seg}", Q::Any),
    (
        "set build status",
        "POST",
        "{repo}/commits/[0-9a-f]{40}/builds",
        Q::Any,
    ),
    (
        "pull requests of commit",
        "GET",
        "{repo}/commits/{seg}/pull-requests",
        Q::Any,
    ),
    ("affected files", "GET", "{repo}/compare/changes", Q::Any),
    ("compare commits", "GET", "{repo}/compare/commits", Q::Any),
    ("archive", "GET", "{repo}/archive", Q::Any),
    ("list pull requests", "GET", "{repo}/pull-requests", Q::Any),
    (
        "get pull request",
        "GET",
        "{repo}/pull-requests/[0-9]+",
        Q::Any,
    ),
    (
        "pull request diff",
        "GET",
        "{repo}/pull-requests/[0-9]+/diff",
        Q::Any,
    ),
    (
        "pull request mergeability",
        "GET",
        "{repo}/pull-requests/[0-9]+/merge",
        Q::Any,
    ),
    (
        "create pull request comment",
        "POST",
        "{repo}/pull-requests/[0-9]+/comments",
        Q::Any,
    ),
    (
        "get pull request comment",
        "GET",
        "{repo}/pull-requests/[0-9]+/comments/[0-9]+",
        Q::Any,
    ),
    (
        "update pull request comment",
        "PUT",
        "{repo}/pull-requests/[0-9]+/comments/[0-9]+",
        Q::Any,
    ),
    (
        "git info/refs",
        "GET",
        "/scm/(?P<p1>[^/]+)/(?P<p2>[^/]+)\\.git/info/refs",
        Q::UploadPack,
    ),
    (
        "git upload-pack",
        "POST",
        "/scm/(?P<p1>[^/]+)/(?P<p2>[^/]+)\\.git/git-upload-pack",
        Q::Any,
    ),
];

/// `{repo}` in Azure DevOps API paths (organization or collection, project, repository).
const ADO_REPO: &str = "/(?P<p1>[^/]+)/(?P<p2>[^/]+)/_apis/git/repositories/(?P<p3>[^/]+)";
const AZURE: &[Spec] = &[
    (
        "list repositories",
        "GET",
        "/[^/]+/[^/]+/_apis/git/repositories",
        Q::Any,
    ),
    ("get repository", "GET", "{repo}", Q::Any),
    ("commit diff", "GET", "{repo}/diffs/commits", Q::Any),
    ("get commit", "GET", "{repo}/commits/{seg}", Q::Any),
    (
        "create commit status",
        "POST",
        "{repo}/commits/[0-9a-f]{40}/statuses",
        Q::Any,
    ),
    ("branch stats", "GET", "{repo}/stats/branches", Q::Any),
    ("get item", "GET", "{repo}/items", Q::Any),
    ("list pull requests", "GET", "{repo}/pullRequests", Q::Any),
    (
        "get pull request",
        "GET",
        "{repo}/pullRequests/[0-9]+",
        Q::Any,
    ),
    (
        "pull request labels",
        "GET",
        "{repo}/pullRequests/[0-9]+/labels",
        Q::Any,
    ),
    (
        "create pull request thread",
        "POST",
        "{repo}/pullRequests/[0-9]+/threads",
        Q::Any,
    ),
    (
        "get pull request thread",
        "GET",
        "{repo}/pullRequests/[0-9]+/threads/[0-9]+",
        Q::Any,
    ),
    (
        "update pull request comment",
        "PATCH",
        "{repo}/pullRequests/[0-9]+/threads/[0-9]+/comments/[0-9]+",
        Q::Any,
    ),
    ("resource locations", "OPTIONS", "/[^/]+/_apis", Q::Any),
    (
        "resource areas",
        "GET",
        "/[^/]+/_apis/ResourceAreas",
        Q::Any,
    ),
    (
        "policy evaluations",
        "GET",
        "/[^/]+/[^/]+/_apis/policy/evaluations",
        Q::Any,
    ),
    (
        "git info/refs",
        "GET",
        "/(?P<p1>[^/]+)/(?P<p2>[^/]+)/_git/(?P<p3>[^/]+)/info/refs",
        Q::UploadPack,
    ),
    (
        "git upload-pack",
        "POST",
        "/(?P<p1>[^/]+)/(?P<p2>[^/]+)/_git/(?P<p3>[^/]+)/git-upload-pack",
        Q::Any,
    ),
];

/// The preset rules of `vendor`, compiled.
pub fn rules(vendor: Vendor) -> Result<Vec<Rule>, RuleError> {
    let (specs, repo) = match vendor {
        Vendor::GithubEnterprise => (GHE, GHE_REPO),
        Vendor::Gitlab => (GITLAB, GITLAB_REPO),
        Vendor::BitbucketDatacenter => (BITBUCKET, BB_REPO),
        Vendor::AzureDevops => (AZURE, ADO_REPO),
    };
    specs
        .iter()
        .map(|(name, method, pattern, q)| {
            let pattern = pattern.replace("{repo}", repo).replace("{seg}", SEG);
            let query = match q {
                Q::Any => QueryRule::Any,
                Q::UploadPack => {
                    QueryRule::Exactly(vec![("service".into(), "git-upload-pack".into())])
                }
            };
            let method = Method::from_bytes(method.as_bytes()).expect("preset methods are valid");
            let mut rule = Rule::new(name, true, method, &pattern, query, Origin::Preset)?;
            rule.encoded_project = vendor == Vendor::Gitlab && pattern.starts_with(GITLAB_REPO);
            Ok(rule)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::rules::RuleSet;
    use crate::relay::target::check_path;

    fn set(vendor: Vendor, projects: Option<&str>) -> RuleSet {
        RuleSet {
            rules: rules(vendor).unwrap(),
            projects: projects.map(|p| crate::relay::rules::anchored(p).unwrap()),
            preset: format!("{}/{PRESET_VERSION}", vendor.name()),
        }
    }

    fn judge(s: &RuleSet, m: &str, p: &str) -> Result<Option<String>, String> {
        let checked = check_path(p).map_err(|r| r.to_string())?;
        s.judge(&Method::from_bytes(m.as_bytes()).unwrap(), &checked)
            .map(|a| a.project)
            .map_err(|r| r.to_string())
    }

    #[test]
    fn every_preset_compiles() {
        for v in Vendor::ALL {
            assert!(rules(v).unwrap().len() > 10, "{v:?}");
        }
    }

    #[test]
    fn gitlab_projects_nested_and_encoded() {
        let s = set(Vendor::Gitlab, Some("acme/.*"));
        assert_eq!(
            judge(
                &s,
                "GET",
                "/api/v4/projects/acme%2Fnet%2Finfra/repository/archive.tar.gz"
            ),
            Ok(Some("acme/net/infra".into()))
        );
        assert_eq!(
            judge(
                &s,
                "GET",
                "/acme/net/infra.git/info/refs?service=git-upload-pack"
            ),
            Ok(Some("acme/net/infra".into()))
        );
        let e = judge(
            &s,
            "GET",
            "/api/v4/projects/acme%2Finfra/repository/branches/a%2Fb",
        )
        .unwrap_err();
        assert!(e.contains("encoded slash"), "{e}");
        let e = judge(&s, "GET", "/api/v4/projects/acmeX%2Finfra").unwrap_err();
        assert!(e.contains("projects"), "{e}");
        let e = judge(
            &s,
            "GET",
            "/acme/infra.git/info/refs?service=git-receive-pack",
        )
        .unwrap_err();
        assert!(e.contains("push"), "{e}");
        let e = judge(&s, "GET", "/acme/infra.git/info/refs").unwrap_err();
        assert!(e.contains("allowlist"), "{e}");
        let e = judge(&s, "POST", "/api/graphql").unwrap_err();
        assert!(e.contains("no rule of gitlab/2026.1"), "{e}");
    }
}
