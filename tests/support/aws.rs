//! A fake of the two AWS services a run's identity needs, on 127.0.0.1: the ECS / EKS Pod
//! Identity container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, answering
//! only with the expected `Authorization` value) and STS `GetCallerIdentity` (answering only a
//! request signed with the access key the endpoint handed out). Every request is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, Uri};

/// The access key the credentials endpoint hands out.
pub const ACCESS_KEY: &str = "ASIAFAKEIDENTITY0001";
/// The caller STS reports for it.
pub const ARN: &str = "arn:aws:sts::111122223333:assumed-role/scalr-runs/ecs-task-1";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub service: &'static str,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

struct State {
    token: String,
    seen: Mutex<Vec<Seen>>,
}

pub struct FakeAws {
    pub credentials_url: String,
    pub sts_url: String,
    state: Arc<State>,
}

impl FakeAws {
    /// Starts both endpoints; the credentials endpoint expects `Authorization: <token>`.
    pub async fn start(token: &str) -> FakeAws {
        let state = Arc::new(State {
            token: token.to_string(),
            seen: Mutex::new(Vec::new()),
        });
        let creds = serve(state.clone(), "credentials").await;
        let sts = serve(state.clone(), "sts").await;
        FakeAws {
            credentials_url: format!("http://{creds}/v1/credentials"),
            sts_url: format!("http://{sts}"),
            state,
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn serve(state: Arc<State>, service: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { answer(&state, service, method, uri, headers, body) }
        },
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn answer(
    state: &State,
    service: &'static str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorization = header("authorization");
    state.seen.lock().unwrap().push(Seen {
        service,
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.clone(),
    });
    let reply = |status: u16, kind: &str, text: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Body::from(text))
            .unwrap()
    };
    match service {
        "credentials" if method == Method::GET && authorization == state.token => {
            let expiration = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
            )
            .to_string();
            reply(
                200,
                "application/json",
                serde_json::json!({
                    "AccessKeyId": ACCESS_KEY,
                    "SecretAccessKey": "fake-secret-access-key-2c9d",
                    "Token": "fake-session-token-7b41",
                    "Expiration": expiration,
                    "RoleArn": "arn:aws:iam::111122223333:role/scalr-runs",
                })
                .to_string(),
            )
        }
        "credentials" => reply(
            401,
            "application/json",
            r#"{"code":"Unauthorized","message":"bad authorization token"}"#.into(),
        ),
        _ if body.contains("Action=GetCallerIdentity")
            && authorization.contains(&format!("Credential={ACCESS_KEY}/"))
            && header("x-amz-security-token") == "fake-session-token-7b41" =>
        {
            reply(
                200,
                "text/xml",
                format!(
                    "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <GetCallerIdentityResult><Arn>{ARN}</Arn><UserId>AROAFAKE:ecs-task-1</UserId>\
                     <Account>111122223333</Account></GetCallerIdentityResult>\
                     <ResponseMetadata><RequestId>0f0e</RequestId></ResponseMetadata>\
                     </GetCallerIdentityResponse>"
                ),
            )
        }
        _ => reply(
            403,
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>\
             <Message>The security token included in the request is invalid.</Message></Error>\
             </ErrorResponse>"
                .into(),
        ),
    }
}
