//! One delivery attempt of one queue entry (DLV-18..DLV-23): resolve the domain, then per MX host
//! and address: HTTPS `/mxdeliv` (unless remembered as absent), then SMTP with STARTTLS.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use super::dane;
use super::https::{self, HttpsOutcome};
use super::mta_sts;
use super::mx::{self, MxError};
use super::reply::{self, RcptResult};
use super::smtp_client;
use super::tls::ClientTls;
use crate::config::Config;
use crate::context::Ctx;

/// DLV-21: how long a host that failed HTTPS but took SMTP is not asked over HTTPS again.
const NO_HTTPS_MEMORY: Duration = Duration::from_secs(30 * 60);

/// What one attempt produced, per recipient, and over which transport (for metrics).
pub struct AttemptResult {
    pub rcpts: Vec<(String, RcptResult)>,
    pub transport: &'static str,
}

/// Long-lived delivery machinery, rebuilt when the delivery config changes.
pub struct Transport {
    pub resolver: TokioResolver,
    pub tls: ClientTls,
    /// DNSSEC-validating resolver for TLSA lookups (DANE, `dane.rs`).
    pub dnssec: TokioResolver,
    no_https: Mutex<HashMap<String, Instant>>,
}

impl Transport {
    pub fn new(cfg: &Config) -> Result<Self, String> {
        Ok(Self {
            resolver: super::dns::build(&cfg.delivery.resolver, Duration::from_secs(10), true)?,
            tls: ClientTls::new(&cfg.delivery.extra_root_certs)?,
            dnssec: super::dns::build_validating(
                &cfg.delivery.resolver,
                Duration::from_secs(10),
                &cfg.delivery.dnssec_trust_anchor,
            )?,
            no_https: Mutex::new(HashMap::new()),
        })
    }

    /// The DANE decision for one MX host; none for address literals (no DNS at all).
    async fn dane_for(&self, domain: &str, host: &str, port: u16) -> dane::Dane {
        if mx::address_literal(domain).is_some() {
            return dane::Dane::None;
        }
        dane::lookup(&self.dnssec, &self.resolver, host, port).await
    }

    fn https_known_absent(&self, host: &str) -> bool {
        let Ok(mut m) = self.no_https.lock() else { return false };
        match m.get(host) {
            Some(t) if t.elapsed() < NO_HTTPS_MEMORY => true,
            Some(_) => {
                m.remove(host);
                false
            }
            None => false,
        }
    }

    fn remember_no_https(&self, host: &str) {
        if let Ok(mut m) = self.no_https.lock() {
            m.retain(|_, t| t.elapsed() < NO_HTTPS_MEMORY);
            m.insert(host.to_string(), Instant::now());
        }
    }

    /// Deliver `message` (already signed) for `rcpts` of `domain`.
    pub async fn attempt(
        self: &Arc<Self>,
        ctx: &Ctx,
        cfg: &Config,
        domain: &str,
        sender: &str,
        rcpts: &[String],
        message: &[u8],
    ) -> AttemptResult {
        let all = |r: RcptResult| rcpts.iter().map(|x| (x.clone(), r.clone())).collect::<Vec<_>>();
        let mut hosts = match mx::resolve(&self.resolver, domain).await {
            Ok(h) => h,
            Err(MxError::Permanent(t)) => {
                return AttemptResult { rcpts: all(RcptResult::Permanent(t)), transport: "smtp" };
            }
            Err(MxError::Temporary(t)) => {
                return AttemptResult { rcpts: all(RcptResult::Temporary(t)), transport: "smtp" };
            }
        };
        // DLV-30, DLV-31, DLV-33: an MTA-STS policy limits hosts and certificates for both transports.
        let policy = mta_sts::policy_for(self, &ctx.store, cfg.delivery.https_port, domain).await;
        let enforce = policy.as_ref().is_some_and(|p| p.mode == mta_sts::Mode::Enforce);
        if let Some(p) = policy.as_ref().filter(|p| p.mode != mta_sts::Mode::None)
            && hosts.iter().any(|h| !p.allows(&h.name))
        {
            let mode = if enforce { "enforce" } else { "testing" };
            ctx.metrics.mta_sts_violations.get_or_create(&vec![("mode", mode)]).inc();
        }
        // RFC 8461 2 / RFC 7672: a host with DANE records is judged by DANE, not by the policy, so
        // the enforce filter runs per host after the TLSA lookup (`dane_for`).
        let allowed = |h: &str| !enforce || policy.as_ref().is_some_and(|p| p.allows(h));
        let mut dane_hosts = Vec::with_capacity(hosts.len());
        for h in hosts.drain(..) {
            let d = self.dane_for(domain, &h.name, cfg.delivery.smtp_port).await;
            if matches!(d, dane::Dane::Records(_)) || allowed(&h.name) {
                dane_hosts.push((h, d));
            }
        }
        if dane_hosts.is_empty() {
            return AttemptResult {
                rcpts: all(RcptResult::Temporary(reply::mta_sts_no_mx(domain))),
                transport: "smtp",
            };
        }
        // DLV-25, DLV-26: which certificates are acceptable.
        let any_cert = !enforce
            && (domain.starts_with('_') || mx::address_literal(domain).is_some() || !cfg.delivery.require_valid_tls);
        let (https_tls, smtp_tls) = if any_cert {
            (self.tls.any_https.clone(), self.tls.any_smtp.clone())
        } else {
            (self.tls.verified_https.clone(), self.tls.verified_smtp.clone())
        };
        let source = super::connect::source_for(&cfg.mail_domain);
        let mut last = (domain.to_string(), "no MX host".to_string());
        for (host, d) in &dane_hosts {
            // DANE (RFC 7672): TLS with a certificate the TLSA records allow, for both transports.
            let (https_tls, smtp_tls) = match d {
                dane::Dane::None => (https_tls.clone(), smtp_tls.clone()),
                dane::Dane::Unusable(e) => {
                    last = (host.name.clone(), e.clone());
                    continue;
                }
                dane::Dane::Records(r) => match (dane::config(r.clone(), true), dane::config(r.clone(), false)) {
                    (Ok(h), Ok(s)) => {
                        tracing::debug!(host = %host.name, records = r.len(), "dane: TLSA records apply");
                        (h, s)
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        last = (host.name.clone(), e);
                        continue;
                    }
                },
            };
            let addrs: Vec<IpAddr> = match mx::addresses(&self.resolver, host).await {
                Ok(a) => a,
                Err(e) => {
                    last = (host.name.clone(), e);
                    continue;
                }
            };
            let mut https_failed = false;
            if cfg.delivery.try_https && !self.https_known_absent(&host.name) {
                for ip in &addrs {
                    let base = JobBase {
                        addr: SocketAddr::new(*ip, cfg.delivery.https_port),
                        host: &host.name,
                        port: cfg.delivery.https_port,
                        tls: https_tls.clone(),
                        sender,
                        message,
                        source,
                    };
                    match https::deliver(base.job(rcpts)).await {
                        HttpsOutcome::Final(r @ RcptResult::Delivered(_)) => {
                            return AttemptResult { rcpts: all(r), transport: "https" };
                        }
                        // DLV-20a: the peer answers for the whole batch; one recipient must not
                        // decide for the others, so each is asked on its own.
                        HttpsOutcome::Final(r) if rcpts.len() > 1 => {
                            let each = one_by_one(&base, rcpts, &r).await;
                            return AttemptResult { rcpts: each, transport: "https" };
                        }
                        HttpsOutcome::Final(r) => return AttemptResult { rcpts: all(r), transport: "https" },
                        HttpsOutcome::NoHttps(e) => {
                            tracing::debug!(host = %host.name, error = %e, "no HTTPS delivery here; trying SMTP");
                            https_failed = true;
                        }
                    }
                }
            }
            for ip in &addrs {
                let job = smtp_client::SmtpJob {
                    addr: SocketAddr::new(*ip, cfg.delivery.smtp_port),
                    host: &host.name,
                    ehlo: &cfg.mail_domain,
                    tls: smtp_tls.clone(),
                    sender,
                    rcpts,
                    message,
                    source,
                };
                match smtp_client::deliver(job).await {
                    Ok(results) => {
                        if https_failed {
                            self.remember_no_https(&host.name);
                        }
                        return AttemptResult { rcpts: results, transport: "smtp" };
                    }
                    Err(e) => {
                        tracing::debug!(host = %host.name, error = %e, "SMTP host failed");
                        last = (host.name.clone(), e.to_string());
                    }
                }
            }
        }
        AttemptResult {
            rcpts: all(RcptResult::Temporary(reply::all_hosts_failed(&last.0, &last.1))),
            transport: "smtp",
        }
    }
}

/// What `one_by_one` needs to build a request per recipient.
struct JobBase<'a> {
    addr: SocketAddr,
    host: &'a str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    sender: &'a str,
    message: &'a [u8],
    source: Option<IpAddr>,
}

impl JobBase<'_> {
    fn job<'a>(&'a self, rcpts: &'a [String]) -> https::HttpsJob<'a> {
        https::HttpsJob {
            addr: self.addr,
            host: self.host,
            port: self.port,
            tls: self.tls.clone(),
            sender: self.sender,
            rcpts,
            message: self.message,
            source: self.source,
        }
    }
}

/// DLV-20a: one POST per recipient after the peer refused the batch. A recipient whose own
/// request gets no usable answer is deferred (never bounced on the batch's word).
async fn one_by_one(base: &JobBase<'_>, rcpts: &[String], batch: &RcptResult) -> Vec<(String, RcptResult)> {
    let mut out = Vec::with_capacity(rcpts.len());
    for r in rcpts {
        let res = match https::deliver(base.job(std::slice::from_ref(r))).await {
            HttpsOutcome::Final(res) => res,
            HttpsOutcome::NoHttps(e) => {
                tracing::debug!(error = %e, "single-recipient retry got no HTTPS answer");
                RcptResult::Temporary(batch.text().to_string())
            }
        };
        out.push((r.clone(), res));
    }
    out
}
