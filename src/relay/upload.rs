//! A response upload that can be sent once more after the control plane refused the session.
//!
//! A `401` to `POST …/response` (the control plane restarted and forgot the relay's session)
//! comes back as soon as the server read the request head, while the client may already have
//! pulled the head line and the first chunks of the VCS's body. [`Upload`] keeps a copy of
//! what it handed out, up to [`KEEP_LIMIT`] bytes, so a second attempt sends the same bytes
//! again and then the rest of the VCS's body. Past the limit the copy is dropped (memory stays
//! flat for any size) and no second attempt is possible: the server accepted the session, or
//! it would have refused it long before. The VCS is never asked twice.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use futures_util::Stream;

/// The most bytes kept for a second attempt.
pub const KEEP_LIMIT: usize = 1 << 20;

type Source = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

struct Shared {
    /// The rest of the body; `None` once it ended or failed.
    source: Option<Source>,
    /// Every chunk handed out so far, while they fit in [`KEEP_LIMIT`].
    kept: Option<Vec<Bytes>>,
    kept_bytes: usize,
    /// The source failed: a second attempt would send a broken body.
    failed: bool,
    /// The attempt whose stream may read; older ones fail at their next poll.
    attempt: u32,
}

/// The body of one response upload, for one or two attempts.
#[derive(Clone)]
pub struct Upload {
    shared: Arc<Mutex<Shared>>,
}

impl Upload {
    pub fn new(source: impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static) -> Upload {
        Upload {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(Box::pin(source)),
                kept: Some(Vec::new()),
                kept_bytes: 0,
                failed: false,
                attempt: 0,
            })),
        }
    }

    /// The body for the next attempt: the kept chunks, then the rest of the source. `None`
    /// when a repeat cannot send the same bytes (too many were sent, or the source failed).
    /// The previous attempt's body fails from now on.
    pub fn next_attempt(
        &self,
    ) -> Option<impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static> {
        let attempt = {
            let mut sh = self.shared.lock().unwrap();
            if sh.kept.is_none() || sh.failed {
                return None;
            }
            sh.attempt += 1;
            sh.attempt
        };
        Some(stream(self.shared.clone(), attempt))
    }

    /// Bytes handed out so far, when still known (for the error message).
    pub fn kept_bytes(&self) -> Option<usize> {
        let sh = self.shared.lock().unwrap();
        sh.kept.as_ref().map(|_| sh.kept_bytes)
    }
}

fn stream(
    shared: Arc<Mutex<Shared>>,
    attempt: u32,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let mut pos = 0usize;
    futures_util::stream::poll_fn(move |cx| {
        let mut sh = shared.lock().unwrap();
        if sh.attempt != attempt {
            return Poll::Ready(Some(Err(io::Error::other(
                "this upload was superseded by a second attempt",
            ))));
        }
        if let Some(kept) = &sh.kept
            && pos < kept.len()
        {
            pos += 1;
            return Poll::Ready(Some(Ok(kept[pos - 1].clone())));
        }
        let Some(source) = sh.source.as_mut() else {
            return Poll::Ready(None);
        };
        match source.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                sh.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                sh.source = None;
                sh.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(b))) => {
                let total = sh.kept_bytes + b.len();
                if total > KEEP_LIMIT {
                    sh.kept = None;
                } else if let Some(kept) = &mut sh.kept {
                    kept.push(b.clone());
                    sh.kept_bytes = total;
                    pos += 1;
                }
                Poll::Ready(Some(Ok(b)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn take(
        s: impl Stream<Item = Result<Bytes, io::Error>>,
        n: usize,
    ) -> Vec<Result<Bytes, String>> {
        let mut s = Box::pin(s);
        let mut out = Vec::new();
        for _ in 0..n {
            match s.next().await {
                Some(r) => out.push(r.map_err(|e| e.to_string())),
                None => break,
            }
        }
        out
    }

    fn source(n: usize, size: usize) -> impl Stream<Item = Result<Bytes, io::Error>> + Send {
        futures_util::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size]))))
    }

    #[tokio::test]
    async fn a_second_attempt_resends_what_the_first_took_then_the_rest() {
        let u = Upload::new(source(4, 10));
        let first = u.next_attempt().unwrap();
        let got = take(first, 2).await;
        assert_eq!(got.len(), 2);
        let second = u.next_attempt().unwrap();
        let all: Vec<u8> = take(second, 10)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap().to_vec())
            .collect();
        let want: Vec<u8> = (0..4u8).flat_map(|i| vec![i; 10]).collect();
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn the_first_attempt_fails_once_superseded() {
        let u = Upload::new(source(4, 10));
        let mut first = Box::pin(u.next_attempt().unwrap());
        assert!(first.next().await.unwrap().is_ok());
        let _second = u.next_attempt().unwrap();
        assert!(first.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn past_the_limit_no_second_attempt_is_offered() {
        let u = Upload::new(source(3, KEEP_LIMIT / 2 + 1));
        let n: usize = take(u.next_attempt().unwrap(), 10)
            .await
            .into_iter()
            .map(|r| r.unwrap().len())
            .sum();
        assert_eq!(n, 3 * (KEEP_LIMIT / 2 + 1));
        assert!(u.kept_bytes().is_none());
        assert!(u.next_attempt().is_none());
    }
}
