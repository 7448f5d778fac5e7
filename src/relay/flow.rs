//! Bytes moving through one relayed request: counted, capped, and watched by the relay's own
//! idle timer.
//!
//! "Idle" means that no byte moved, in either direction, for `SCALR_AGENT_RELAY_IDLE_TIMEOUT`:
//! neither a byte of the request body (from the control plane, or into the VCS) nor a byte of
//! the response (from the VCS, or into the control plane), nor a response head. A body that
//! moves slowly but steadily never times out, however long it takes (the whole-request
//! timeout bounds that); one that stops is caught after the idle time, whichever side stopped.
//! reqwest's `read_timeout` cannot say this: it only times reads, so a slow upload and a stalled
//! peer that does not read look alike to it.
//!
//! Each body passes through [`watched`], which marks every chunk taken from its source and
//! every chunk taken by its sink as movement, and records which side the request waits on
//! (its [`Phase`]); [`Activity::expired`] resolves once nothing moved for the idle time and
//! says where the request stood.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where a request waits while nothing moves; named in the idle error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// For the head of the control plane's `GET …/body`.
    BodyHead = 0,
    /// For the next chunk of the request body from the control plane.
    BodyFromControl,
    /// For the VCS to take the next chunk of the request body.
    BodyToVcs,
    /// For the VCS's response head.
    VcsAnswer,
    /// For the next chunk of the response body from the VCS.
    ResponseFromVcs,
    /// For the control plane to take the next chunk of the response.
    ResponseToControl,
    /// For the control plane's answer to the whole response.
    Acknowledge,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::BodyHead,
        Phase::BodyFromControl,
        Phase::BodyToVcs,
        Phase::VcsAnswer,
        Phase::ResponseFromVcs,
        Phase::ResponseToControl,
        Phase::Acknowledge,
    ];

    /// What did not happen, as the start of an error message.
    pub fn stalled(self) -> &'static str {
        match self {
            Phase::BodyHead => "the control plane did not start sending the request body",
            Phase::BodyFromControl => "the control plane sent no more of the request body",
            Phase::BodyToVcs => "the VCS took no more of the request body",
            Phase::VcsAnswer => "the VCS did not answer",
            Phase::ResponseFromVcs => "the VCS sent no more of the response body",
            Phase::ResponseToControl => "the control plane took no more of the response",
            Phase::Acknowledge => "the control plane did not acknowledge the response",
        }
    }
}

/// The movement of one request's bytes: when the last one moved, what the request waits on,
/// and the byte counts both ways.
#[derive(Debug)]
pub struct Activity {
    idle: Duration,
    started: Instant,
    /// Milliseconds from `started` to the last movement.
    last: AtomicU64,
    phase: AtomicU8,
    /// Bytes of the request body read from the control plane.
    pub to_vcs: AtomicU64,
    /// Bytes of the response body read from the VCS.
    pub from_vcs: AtomicU64,
    /// Why a body stream broke (its first error), so the request's error names the cause
    /// rather than the HTTP client's view of a broken body.
    broke: Mutex<Option<String>>,
    /// Fired when the idle time ran out: every watched stream ends with an error.
    stop: CancellationToken,
}

impl Activity {
    pub fn new(idle: Duration, phase: Phase) -> Activity {
        Activity {
            idle,
            started: Instant::now(),
            last: AtomicU64::new(0),
            phase: AtomicU8::new(phase as u8),
            to_vcs: AtomicU64::new(0),
            from_vcs: AtomicU64::new(0),
            broke: Mutex::new(None),
            stop: CancellationToken::new(),
        }
    }

    /// Something moved now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        Phase::ALL[usize::from(self.phase.load(Ordering::Relaxed)).min(Phase::ALL.len() - 1)]
    }

    /// The first reason a body broke, if one did.
    pub fn broke(&self) -> Option<String> {
        self.broke.lock().unwrap().clone()
    }

    fn record(&self, reason: &str) {
        self.broke
            .lock()
            .unwrap()
            .get_or_insert_with(|| reason.to_string());
    }

    /// Resolves once nothing moved for the idle time, with the error to report; from then on
    /// every watched stream fails.
    pub async fn expired(&self) -> String {
        loop {
            let seen = self.last.load(Ordering::Relaxed);
            let deadline = self.started + Duration::from_millis(seen) + self.idle;
            tokio::time::sleep_until(deadline).await;
            if self.last.load(Ordering::Relaxed) == seen {
                self.stop.cancel();
                return format!(
                    "{}: timed out, no byte moved for {:?} (SCALR_AGENT_RELAY_IDLE_TIMEOUT); \
                     {} bytes of the request body and {} of the response had moved",
                    self.phase().stalled(),
                    self.idle,
                    self.to_vcs.load(Ordering::Relaxed),
                    self.from_vcs.load(Ordering::Relaxed),
                );
            }
        }
    }
}

/// Which body a stream carries, for its counter, its phases and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request body, from the control plane to the VCS.
    Request,
    /// The response body, from the VCS to the control plane.
    Response,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Request => "request body",
            Direction::Response => "response body",
        }
    }

    /// Waiting on the source, waiting on the sink, and after the end.
    fn phases(self) -> (Phase, Phase, Phase) {
        match self {
            Direction::Request => (Phase::BodyFromControl, Phase::BodyToVcs, Phase::VcsAnswer),
            Direction::Response => (
                Phase::ResponseFromVcs,
                Phase::ResponseToControl,
                Phase::Acknowledge,
            ),
        }
    }

    fn counter(self, a: &Activity) -> &AtomicU64 {
        match self {
            Direction::Request => &a.to_vcs,
            Direction::Response => &a.from_vcs,
        }
    }
}

struct State<S> {
    source: Pin<Box<S>>,
    activity: Arc<Activity>,
    direction: Direction,
    limit: u64,
    first: bool,
    done: bool,
}

/// `source` as a stream that counts its bytes into `activity`, refuses it past `limit`
/// bytes, marks each chunk taken from the source and each chunk taken by the sink as
/// movement, records which side it waits on, and fails once the idle time ran out.
pub fn watched<S, E>(
    source: S,
    activity: Arc<Activity>,
    direction: Direction,
    limit: u64,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let state = State {
        source: Box::pin(source),
        activity,
        direction,
        limit,
        first: true,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let (from_source, to_sink, after) = st.direction.phases();
        if !st.first {
            // The sink asks for more: it took the last chunk.
            st.activity.touch();
        }
        st.first = false;
        st.activity.set_phase(from_source);
        let stop = st.activity.stop.clone();
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => {
                st.done = true;
                return Some((Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")), st));
            }
            next = st.source.next() => next,
        };
        let what = st.direction.name();
        let fail = |st: &mut State<S>, reason: String| {
            st.activity.record(&reason);
            st.done = true;
            Err(io::Error::other(reason))
        };
        match next {
            None => {
                st.activity.set_phase(after);
                None
            }
            Some(Ok(b)) => {
                let counter = st.direction.counter(&st.activity);
                let n = counter.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                if n > st.limit {
                    let limit = st.limit;
                    let e = fail(
                        &mut st,
                        format!(
                            "the {what} is larger than the {limit}-byte limit (SCALR_AGENT_RELAY_MAX_BODY_MB)"
                        ),
                    );
                    return Some((e, st));
                }
                if !b.is_empty() {
                    st.activity.touch();
                }
                st.activity.set_phase(to_sink);
                Some((Ok(b), st))
            }
            Some(Err(e)) => {
                let n = st.direction.counter(&st.activity).load(Ordering::Relaxed);
                let reason = format!(
                    "the {what} broke after {n} bytes: {}",
                    crate::http::error_chain(&e)
                );
                let e = fail(&mut st, reason);
                Some((e, st))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        n: usize,
        every: Duration,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        futures_util::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Bytes::from_static(b"0123456789"))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn steady_bodies_never_idle_and_a_stall_is_named() {
        let a = Arc::new(Activity::new(
            Duration::from_secs(1),
            Phase::BodyFromControl,
        ));
        // 20 chunks, one every 600 ms: 12 s in all, never 1 s without a byte.
        let s = watched(
            chunks(20, Duration::from_millis(600)),
            a.clone(),
            Direction::Request,
            1 << 20,
        );
        let drained = async {
            let v: Vec<_> = s.collect().await;
            assert!(v.iter().all(Result::is_ok));
        };
        tokio::select! {
            () = drained => {}
            e = a.expired() => panic!("a steady body timed out: {e}"),
        }
        assert_eq!(a.to_vcs.load(Ordering::Relaxed), 200);
        assert_eq!(a.phase(), Phase::VcsAnswer);
        // Then the VCS does not answer.
        let t = tokio::time::Instant::now();
        let e = a.expired().await;
        assert!(t.elapsed() <= Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(
            e.starts_with("the VCS did not answer: timed out, no byte moved for 1s"),
            "{e}"
        );
        assert!(e.contains("200 bytes of the request body"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_stops_taking_is_told_from_a_source_that_stops_sending() {
        let a = Arc::new(Activity::new(Duration::from_secs(1), Phase::VcsAnswer));
        let mut s = Box::pin(watched(
            chunks(5, Duration::from_millis(10)),
            a.clone(),
            Direction::Response,
            1 << 20,
        ));
        assert!(s.next().await.unwrap().is_ok());
        // The sink holds the chunk and asks for no more.
        let e = a.expired().await;
        assert!(
            e.starts_with("the control plane took no more of the response"),
            "{e}"
        );
        assert_eq!(
            s.next().await.unwrap().unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert!(s.next().await.is_none());

        let a = Arc::new(Activity::new(Duration::from_secs(1), Phase::VcsAnswer));
        let stalled = chunks(1, Duration::from_millis(10)).chain(futures_util::stream::pending());
        let mut s = Box::pin(watched(stalled, a.clone(), Direction::Response, 1 << 20));
        assert!(s.next().await.unwrap().is_ok());
        let (e, next) = tokio::join!(a.expired(), s.next());
        assert!(
            e.starts_with("the VCS sent no more of the response body"),
            "{e}"
        );
        assert!(next.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let a = Arc::new(Activity::new(Duration::from_secs(60), Phase::VcsAnswer));
        let v: Vec<_> = watched(
            chunks(3, Duration::ZERO),
            a.clone(),
            Direction::Response,
            25,
        )
        .collect()
        .await;
        assert!(v[0].is_ok() && v[1].is_ok() && v[2].is_err());
        assert_eq!(v.len(), 3);
        assert!(
            a.broke().unwrap().contains("larger than the 25-byte limit"),
            "{:?}",
            a.broke()
        );
    }
}
