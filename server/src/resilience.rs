//! Retries with backoff, and a circuit breaker per external dependency (the Kafka
//! cluster, each sink target, the DLQ producer).
//!
//! A breaker opens after `breaker_failures` consecutive failures; while open, callers wait
//! out a cool-down and then make one probe (half-open): success closes it, failure opens it
//! again. Nothing is ever dropped while a breaker is open — the caller holds its work and
//! the pipeline pauses the partitions that feed it.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ResilienceConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The metric value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        self as u8
    }
}

#[derive(Debug)]
pub struct Breaker {
    pub name: String,
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: Mutex<Option<Instant>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(name: impl Into<String>, config: &ResilienceConfig) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            state: AtomicU8::new(BreakerState::Closed as u8),
            failures: AtomicU32::new(0),
            opened_at: Mutex::new(None),
            threshold: config.breaker_failures.max(1),
            cooldown: Duration::from_millis(config.breaker_cooldown_ms),
        })
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Relaxed) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// True while the dependency is considered down (open or probing).
    pub fn is_tripped(&self) -> bool {
        self.state() != BreakerState::Closed
    }

    fn set(&self, to: BreakerState) {
        let from = self.state.swap(to as u8, Ordering::Relaxed);
        if from != to as u8 {
            match to {
                BreakerState::Open => {
                    tracing::warn!(breaker = %self.name, failures = self.failures.load(Ordering::Relaxed), "circuit breaker open")
                }
                BreakerState::HalfOpen => {
                    tracing::info!(breaker = %self.name, "circuit breaker half-open: probing")
                }
                BreakerState::Closed => {
                    tracing::info!(breaker = %self.name, "circuit breaker closed")
                }
            }
        }
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.state() != BreakerState::Closed {
            self.set(BreakerState::Closed);
        }
    }

    pub fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let reopen = self.state() == BreakerState::HalfOpen;
        if reopen || failures >= self.threshold {
            if let Ok(mut at) = self.opened_at.lock() {
                *at = Some(Instant::now());
            }
            self.set(BreakerState::Open);
        }
    }

    /// How long to wait before the next attempt: `backoff` while closed; while open, the
    /// rest of the cool-down, after which the breaker lets one probe through.
    pub fn delay(&self, backoff: Duration) -> Duration {
        if self.state() != BreakerState::Open {
            return backoff;
        }
        let opened = self.opened_at.lock().ok().and_then(|at| *at);
        let remaining = opened.map_or(Duration::ZERO, |at| {
            self.cooldown.saturating_sub(at.elapsed())
        });
        if remaining.is_zero() {
            self.set(BreakerState::HalfOpen);
        }
        remaining.max(backoff.min(self.cooldown))
    }
}

/// Exponential backoff with jitter for one run of retries; `reset` after a success.
pub struct Backoff {
    builder: ExponentialBuilder,
    current: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(config: &ResilienceConfig) -> Self {
        let max = Duration::from_millis(config.retry_max_ms.max(config.retry_initial_ms));
        let builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.retry_initial_ms))
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Self {
            current: builder.build(),
            builder,
            max,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32, cooldown_ms: u64) -> ResilienceConfig {
        ResilienceConfig {
            breaker_failures: failures,
            breaker_cooldown_ms: cooldown_ms,
            ..ResilienceConfig::default()
        }
    }

    #[test]
    fn opens_after_consecutive_failures_probes_after_cooldown_and_closes() {
        let b = Breaker::new("sink", &config(3, 50));
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        b.record_failure();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.delay(Duration::from_millis(1)) > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        b.delay(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(60));
        b.delay(Duration::from_millis(1));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let mut backoff = Backoff::new(&ResilienceConfig {
            retry_initial_ms: 10,
            retry_max_ms: 80,
            ..ResilienceConfig::default()
        });
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(160)),
            "{delays:?}"
        );
        assert!(delays[6] >= Duration::from_millis(80), "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(40));
    }
}
