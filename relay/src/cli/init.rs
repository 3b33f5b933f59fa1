//! `chatrelay init DOMAIN`: a commented config with every default, data_dir (0700), the DKIM key
//! and the keyed-hash secret (OPS-1). Refuses to overwrite an existing config or key. With
//! `--from-chatmail-ini` the template is filled from a chatmail/relay config (OPS-2).

use std::path::Path;

use super::Failure;
use crate::accounts::Secret;
use crate::outbound::dkim_key;

const TEMPLATE: &str = include_str!("../../../config/chatrelay.toml");

pub fn run(domain: Option<String>, config: &Path, from_ini: Option<&Path>) -> Result<(), Failure> {
    let text = match (domain, from_ini) {
        (Some(_), Some(_)) => {
            return Err(Failure::Usage(
                "give either DOMAIN or --from-chatmail-ini (the domain comes from the ini)".into(),
            ));
        }
        (None, None) => {
            return Err(Failure::Usage("init needs the mail domain, e.g. `chatrelay init chat.example.org`".into()));
        }
        (Some(domain), None) => {
            if domain.is_empty() || domain.contains(['@', '/', ' ', '"']) {
                return Err(Failure::Usage(format!("{domain:?} is not a domain name")));
            }
            let text =
                TEMPLATE.replacen("mail_domain = \"chat.example.org\"", &format!("mail_domain = \"{domain}\""), 1);
            // Issue 29: an IP-only relay cannot get an ACME certificate for its address.
            if crate::outbound::mx::address_literal(&domain).is_some() {
                text.replacen("mode = \"acme\"", "mode = \"self-signed\"", 1)
            } else {
                text
            }
        }
        (None, Some(ini)) => from_chatmail_ini(ini)?,
    };
    if config.exists() {
        return Err(Failure::Runtime(format!("{} already exists; not overwriting it", config.display())));
    }
    let cfg =
        crate::config::load_str(&text, &config.display().to_string()).map_err(|e| Failure::Usage(e.to_string()))?;
    let key_path = cfg.dkim.key.clone().unwrap_or_else(|| dkim_key::default_path(&cfg.data_dir));
    if key_path.exists() {
        return Err(Failure::Runtime(format!("{} already exists; not overwriting it", key_path.display())));
    }
    create_private_dir(&cfg.data_dir)?;
    if let Some(parent) = config.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::Runtime(format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(config, text).map_err(|e| Failure::Runtime(format!("{}: {e}", config.display())))?;
    dkim_key::ensure(&key_path).map_err(Failure::runtime)?;
    Secret::load_or_create(&cfg.data_dir).map_err(|e| Failure::Runtime(format!("secret: {e}")))?;
    println!("Wrote {} and created {}.", config.display(), cfg.data_dir.display());
    println!("Next steps:");
    println!("  1. Review the config: {}", config.display());
    println!("  2. Publish the DNS records:  chatrelay dns --config {}", config.display());
    println!("  3. Start the relay:          systemctl enable --now chatrelay");
    Ok(())
}

/// OPS-2: the template with the chatmail.ini values; keys without a counterpart go to stderr.
fn from_chatmail_ini(ini: &Path) -> Result<String, Failure> {
    let origin = ini.display().to_string();
    let text = std::fs::read_to_string(ini).map_err(|e| Failure::Usage(format!("{origin}: {e}")))?;
    let conv = super::chatmail_ini::convert(&text, &origin, TEMPLATE).map_err(|e| Failure::Usage(e.to_string()))?;
    for key in &conv.unmapped {
        eprintln!("chatrelay: {origin}: {key} has no counterpart in chatrelay; not converted");
    }
    Ok(conv.toml)
}

fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
    }
    Ok(())
}
