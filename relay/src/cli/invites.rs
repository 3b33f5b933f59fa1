//! `chatrelay invites ...` (issue 28): create, list and revoke registration invites for
//! `registration = "invite"`. Works on the store in `data_dir` directly (SQLite serialises the
//! writes with a running `serve`, which reads invites afresh for every use), or on the shared
//! PostgreSQL database with `[store] backend = "postgres"`.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{Failure, load_config, runtime};
use crate::accounts::invites::{HINT_LEN, new_token, token_hash};
use crate::config::{Config, Registration};
use crate::store::{Invite, Store};

#[derive(Subcommand, Debug)]
pub enum InvitesCmd {
    /// Make an invite; prints its dcaccount: and https links and writes its QR code as SVG.
    Create {
        /// How many accounts the invite may create.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime, e.g. 7d, 12h (default: never expires).
        #[arg(long)]
        expires: Option<String>,
        /// Where to write the QR code (default: invite-<hint>.svg in the current directory).
        #[arg(long)]
        qr: Option<PathBuf>,
    },
    /// One line per invite: id, token hint, uses, created, expires, state.
    List,
    /// Stop an invite from creating more accounts (accounts it made stay).
    Revoke { id: i64 },
}

pub fn run(config: &Path, cmd: InvitesCmd) -> Result<(), Failure> {
    let cfg = load_config(config)?;
    if let InvitesCmd::Create { uses, expires, .. } = &cmd {
        if *uses == 0 {
            return Err(Failure::Usage("--uses must be at least 1".into()));
        }
        if let Some(e) = expires {
            crate::config::units::parse_duration(e).map_err(|m| Failure::Usage(format!("--expires: {m}")))?;
        }
    }
    let pg = cfg.store.backend == crate::config::StoreKind::Postgres;
    if !pg && !cfg.data_dir.join("chatrelay.db").exists() {
        return Err(Failure::Runtime(format!(
            "no database in {} (run `chatrelay init` or `serve` first)",
            cfg.data_dir.display()
        )));
    }
    runtime()?.block_on(async move {
        // On PostgreSQL the shared database, so the invite is valid on every node (issue 27).
        let store = Store::open_config(&cfg).map_err(Failure::runtime)?;
        exec(&cfg, &store, cmd).await
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
fn when(t: i64) -> String {
    let secs = t.rem_euclid(86_400);
    format!("{} {:02}:{:02} UTC", super::accounts::day(t.div_euclid(86_400)), secs / 3600, secs % 3600 / 60)
}

fn line(i: &Invite, now: i64) -> String {
    let state = if i.revoked {
        "revoked"
    } else if i.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if i.used >= i.max_uses {
        "used-up"
    } else {
        "active"
    };
    format!(
        "{}\thint={}\tused={}/{}\tcreated={}\texpires={}\t{state}",
        i.id,
        i.hint,
        i.used,
        i.max_uses,
        when(i.created_at),
        i.expires_at.map(when).unwrap_or_else(|| "never".into()),
    )
}

/// The QR code of `text` as a standalone SVG document.
fn qr_svg(text: &str) -> Result<String, Failure> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| Failure::Runtime(format!("QR code: {e}")))?;
    Ok(code
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

async fn exec(cfg: &Config, store: &Store, cmd: InvitesCmd) -> Result<(), Failure> {
    let now = crate::store::now_secs();
    match cmd {
        InvitesCmd::Create { uses, expires, qr } => {
            let lifetime = match expires {
                Some(e) => Some(crate::config::units::parse_duration(&e).map_err(Failure::Usage)?),
                None => None,
            };
            let expires_at = lifetime.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
            let token = new_token();
            let hint: String = token.chars().take(HINT_LEN).collect();
            let https = format!("https://{}/new?invite={token}", cfg.mail_domain);
            let dcaccount = format!("dcaccount:{https}");
            // The QR file first: an invite whose code could not be written is never made.
            let qr_path = qr.unwrap_or_else(|| PathBuf::from(format!("invite-{hint}.svg")));
            std::fs::write(&qr_path, qr_svg(&dcaccount)?)
                .map_err(|e| Failure::Runtime(format!("{}: {e}", qr_path.display())))?;
            let invite = match store.create_invite(token_hash(&token), hint, uses, expires_at).await {
                Ok(i) => i,
                Err(e) => {
                    let _ = std::fs::remove_file(&qr_path);
                    return Err(Failure::runtime(e));
                }
            };
            println!("{}", line(&invite, now));
            println!("{dcaccount}");
            println!("{https}");
            println!("QR code: {}", qr_path.display());
            if cfg.registration != Registration::Invite {
                eprintln!(
                    "chatrelay: note: registration is not \"invite\" in this config; the invite has no effect until it is"
                );
            }
        }
        InvitesCmd::List => {
            for i in store.list_invites().await.map_err(Failure::runtime)? {
                println!("{}", line(&i, now));
            }
        }
        InvitesCmd::Revoke { id } => {
            if store.revoke_invite(id).await.map_err(Failure::runtime)? {
                println!("invite {id} revoked");
            } else {
                return Err(Failure::Runtime(format!("no active invite {id}")));
            }
        }
    }
    Ok(())
}
