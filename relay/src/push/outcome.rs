//! What a finished request does to its job (PUSH-9, PUSH-10, PUSH-14, PUSH-16).

use super::{Attempt, COALESCE_MS, GIVE_UP_MS, Notifier};
use crate::store::{JobDone, now_millis};

/// Retry n (n = 0 for the first retry) waits 8^n seconds (PUSH-10).
pub fn retry_delay_ms(failed_attempts: u32) -> i64 {
    let n = failed_attempts.saturating_sub(1).min(10);
    8i64.pow(n) * 1000
}

impl Notifier {
    pub(super) async fn finish(&mut self, a: Attempt) {
        let Attempt { job, started_ms, result } = a;
        self.in_flight.remove(&job.id);
        let now = now_millis();
        let tag = self.tag(job.id);
        let store = &self.ctx.store;
        let metrics = &self.ctx.metrics;
        let result_label = |r: &'static str| vec![("result", r)];
        match result {
            Ok(200) => {
                metrics.push_requests.get_or_create(&result_label("ok")).inc();
                metrics.push_latency.observe((now - job.created_at_ms).max(0) as f64 / 1000.0);
                metrics.push_coalesced.inc_by(u64::from(job.messages.saturating_sub(1)));
                self.last_ok.insert((job.account, job.token.clone()), now);
                match store.push_job_done(job.id, job.messages, now + COALESCE_MS).await {
                    Ok(JobDone::Deleted) => tracing::debug!(job = %tag, "push delivered"),
                    // PUSH-15: messages arrived while the request was in flight.
                    Ok(JobDone::Rearmed) => tracing::debug!(job = %tag, "push delivered; more messages pending"),
                    Err(e) => tracing::warn!(job = %tag, error = %e, "recording push success failed"),
                }
            }
            Ok(410) => {
                metrics.push_requests.get_or_create(&result_label("gone")).inc();
                tracing::info!(job = %tag, "push token gone; removed");
                if let Err(e) = store.remove_push_token(job.account, job.token.clone()).await {
                    tracing::warn!(job = %tag, error = %e, "removing dead push token failed");
                }
            }
            other => {
                let why = match &other {
                    Ok(status) => format!("status {status}"),
                    Err(e) => e.to_string(),
                };
                let attempts = job.attempts + 1;
                let first = job.first_attempt_ms.unwrap_or(started_ms);
                let next = now + retry_delay_ms(attempts);
                if next > first + GIVE_UP_MS {
                    metrics.push_requests.get_or_create(&result_label("dropped")).inc();
                    tracing::info!(job = %tag, attempts, error = %why, "push job dropped after retries");
                    if let Err(e) = store.push_job_drop(job.id).await {
                        tracing::warn!(job = %tag, error = %e, "dropping push job failed");
                    }
                } else {
                    metrics.push_requests.get_or_create(&result_label("retry")).inc();
                    tracing::info!(job = %tag, attempts, error = %why, retry_in_ms = next - now, "push failed; will retry");
                    if let Err(e) = store.push_job_retry(job.id, attempts, first, next).await {
                        tracing::warn!(job = %tag, error = %e, "scheduling push retry failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_matches_push_10() {
        let delays: Vec<i64> = (1..=6).map(retry_delay_ms).collect();
        assert_eq!(delays, vec![1000, 8000, 64_000, 512_000, 4_096_000, 32_768_000]);
        // Waits of the five retries add up to under 5 h; the sixth would start after it.
        let sum5: i64 = delays[..5].iter().sum();
        assert!(sum5 < GIVE_UP_MS && sum5 + delays[5] > GIVE_UP_MS);
    }
}
