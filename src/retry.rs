//! The one retry loop of the crate: bounded or unbounded attempts with jittered exponential
//! backoff, a server's `Retry-After` hint and an optional deadline.
//!
//! Callers decide per failure whether it is worth another try ([`Attempt::Retry`], with the
//! wait the server asked for) or final ([`Attempt::Fatal`]); [`Policy::run`] does the waiting.
//! Used by every HTTP request (`http`) and by the daemon's deliveries (`agent::deliver`), so
//! they back off the same way. Nothing here knows HTTP.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Longest wait between two attempts unless a policy says otherwise.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One attempt's failure: worth another try (after at least `after`, when the server said
/// so), or final.
#[derive(Debug)]
pub enum Attempt<E> {
    Retry { error: E, after: Option<Duration> },
    Fatal(E),
}

impl<E> Attempt<E> {
    /// A retryable failure without a server hint.
    pub fn retry(error: E) -> Attempt<E> {
        Attempt::Retry { error, after: None }
    }
}

/// How to retry: the first delay, its cap, how many retries (after the first attempt) and
/// until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The ceiling of the first wait; each further wait's ceiling doubles.
    pub initial: Duration,
    /// The largest ceiling (a longer `Retry-After` still wins).
    pub max_delay: Duration,
    /// Retries after the first attempt; `None`: until success or a fatal error.
    pub max_retries: Option<u32>,
    /// No wait ends after this instant: the last failure is returned instead.
    pub deadline: Option<tokio::time::Instant>,
}

impl Policy {
    /// At most `max_retries` retries, waits starting near `initial`, capped at [`MAX_BACKOFF`].
    pub fn bounded(initial: Duration, max_retries: u32) -> Policy {
        Policy {
            initial,
            max_delay: MAX_BACKOFF,
            max_retries: Some(max_retries),
            deadline: None,
        }
    }

    /// Retries without a count: the caller bounds it (a deadline or by dropping the future).
    pub fn unbounded(initial: Duration) -> Policy {
        Policy {
            initial,
            max_delay: MAX_BACKOFF,
            max_retries: None,
            deadline: None,
        }
    }

    /// Jittered exponential backoff: a random wait between half and all of
    /// `initial * 2^(attempt-1)`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = ceiling / 2;
        half + ceiling.mul_f64(rand::thread_rng().r#gen::<f64>() * 0.5)
    }

    /// Calls `op` with the attempt number (from 1) until it succeeds, fails for good, runs out
    /// of retries or would wait past the deadline; then returns its value or last error.
    /// `on_retry` sees each retried error with its attempt number and the wait that follows
    /// (for logs and counters).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Attempt<E>>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let (error, after) = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry { error, after }) => (error, after),
            };
            if self.max_retries.is_some_and(|max| attempt > max) {
                return Err(error);
            }
            let delay = self.delay(attempt).max(after.unwrap_or_default());
            if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() + delay > d)
            {
                return Err(error);
            }
            on_retry(&error, attempt, delay);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy::bounded(Duration::from_millis(100), 3);
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d4 = p.delay(4);
            assert!(
                d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800),
                "{d4:?}"
            );
            assert!(p.delay(30) <= MAX_BACKOFF);
        }
    }

    // Paused time: the waits below are real backoffs (seconds), which tokio's clock skips.
    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_fatal_errors_end_at_once() {
        let p = Policy::bounded(Duration::from_secs(1), 2);
        let mut seen = Vec::new();
        let r: Result<(), u32> = p
            .run(
                |n| async move { Err(Attempt::retry(n)) },
                |e, n, _| seen.push((*e, n)),
            )
            .await;
        assert_eq!(r, Err(3));
        assert_eq!(seen, [(1, 1), (2, 2)]);
        let r: Result<(), &str> = p
            .run(|_| async { Err(Attempt::Fatal("no")) }, |_, _, _| {})
            .await;
        assert_eq!(r, Err("no"));
        let r = Policy::unbounded(Duration::from_secs(1))
            .run(
                |n| async move { if n < 5 { Err(Attempt::retry(n)) } else { Ok(n) } },
                |_, _, _| {},
            )
            .await;
        assert_eq!(r, Ok(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_and_the_deadline_stops_waiting() {
        let started = tokio::time::Instant::now();
        let r: Result<u32, u32> = Policy::bounded(Duration::from_millis(1), 1)
            .run(
                |n| async move {
                    if n == 1 {
                        Err(Attempt::Retry {
                            error: n,
                            after: Some(Duration::from_millis(150)),
                        })
                    } else {
                        Ok(n)
                    }
                },
                |_, _, delay| assert!(delay >= Duration::from_millis(150)),
            )
            .await;
        assert_eq!(r, Ok(2));
        assert!(started.elapsed() >= Duration::from_millis(150));
        let p = Policy {
            deadline: Some(tokio::time::Instant::now() + Duration::from_millis(50)),
            ..Policy::unbounded(Duration::from_secs(10))
        };
        let mut calls = 0;
        let r: Result<(), u32> = p
            .run(
                |n| {
                    calls += 1;
                    async move { Err(Attempt::retry(n)) }
                },
                |_, _, _| {},
            )
            .await;
        assert_eq!(
            (r, calls),
            (Err(1), 1),
            "a wait past the deadline is not taken"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_between_attempts_follow_the_backoff() {
        let p = Policy::bounded(Duration::from_secs(2), 4);
        let started = tokio::time::Instant::now();
        let mut at = Vec::new();
        let mut told = Vec::new();
        let r: Result<(), u32> = p
            .run(
                |n| {
                    at.push(started.elapsed());
                    async move { Err(Attempt::retry(n)) }
                },
                |_, n, delay| told.push((n, delay)),
            )
            .await;
        assert_eq!(r, Err(5));
        assert_eq!(at.len(), 5);
        for (i, (n, delay)) in told.iter().enumerate() {
            // Attempt n waits between half and all of 2 s * 2^(n-1), and exactly as long as
            // it told `on_retry` (the clock only moves by the policy's sleeps).
            let ceiling = Duration::from_secs(2) * (1 << (n - 1));
            assert!(*delay >= ceiling / 2 && *delay <= ceiling, "{n}: {delay:?}");
            let waited = at[i + 1] - at[i];
            assert!(
                waited >= *delay && waited <= *delay + Duration::from_millis(2),
                "{n}: waited {waited:?}, told {delay:?}"
            );
        }
    }
}
