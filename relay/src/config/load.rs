//! Loading with figment: defaults, then the TOML file, then `CHATRELAY_` environment variables.
//!
//! serde stops at the first error, so to report every error of a file together each leaf value is
//! first checked on its own against the defaults; unknown keys are found by walking the tree.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use super::Config;

#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct ConfigError {
    pub errors: Vec<String>,
}

/// Load `path` with environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    if !path.exists() {
        return Err(ConfigError { errors: vec![format!("config file {} does not exist", path.display())] });
    }
    let file = Toml::file(path);
    let origin = path.display().to_string();
    build(Figment::new().merge(file), &origin)
}

/// Load from a TOML string (tests, `init`), with environment overrides.
pub fn load_str(toml: &str, origin: &str) -> Result<Config, ConfigError> {
    build(Figment::new().merge(Toml::string(toml)), origin)
}

fn env() -> Env {
    Env::prefixed("CHATRELAY_").split("__")
}

fn build(user: Figment, origin: &str) -> Result<Config, ConfigError> {
    let user = user.merge(env());
    let mut errors = Vec::new();

    let given: Dict = match user.extract::<Dict>() {
        Ok(d) => d,
        Err(e) => return Err(ConfigError { errors: vec![format!("{origin}: {e}")] }),
    };
    let known = match Serialized::defaults(Config::default()).data() {
        Ok(mut m) => m.remove(&figment::Profile::Default).unwrap_or_default(),
        Err(e) => return Err(ConfigError { errors: vec![e.to_string()] }),
    };

    let mut leaves = Vec::new();
    walk(&given, &known, "", &mut leaves, &mut errors, &user, origin);

    // Each known leaf on its own over the defaults, so one bad value does not hide the next.
    for (path, value) in &leaves {
        let single = nest(path, value.clone());
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Serialized::globals(single));
        if let Err(e) = fig.extract::<Config>() {
            errors.push(format!("{}: {path}: {}", source_of(&user, path, origin), first_line(&e)));
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }
    let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(user)
        .extract()
        .map_err(|e| ConfigError { errors: vec![format!("{origin}: {e}")] })?;
    let semantic = cfg.validate();
    if !semantic.is_empty() {
        return Err(ConfigError { errors: semantic.into_iter().map(|e| format!("{origin}: {e}")).collect() });
    }
    Ok(cfg)
}

fn first_line(e: &figment::Error) -> String {
    // figment appends "for key ... in ..."; our message names the key itself.
    e.kind.to_string()
}

fn source_of(fig: &Figment, path: &str, origin: &str) -> String {
    match fig.find_metadata(path) {
        Some(md) if md.name.contains("environment") => {
            let var = format!("CHATRELAY_{}", path.replace('.', "__").to_uppercase());
            format!("environment variable {var}")
        }
        _ => origin.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    given: &Dict,
    known: &Dict,
    prefix: &str,
    leaves: &mut Vec<(String, Value)>,
    errors: &mut Vec<String>,
    fig: &Figment,
    origin: &str,
) {
    for (k, v) in given {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match known.get(k) {
            None if is_optional_key(&path) => leaves.push((path, v.clone())),
            None => errors.push(format!("{}: unknown key \"{path}\"", source_of(fig, &path, origin))),
            Some(Value::Dict(_, kd)) => match v {
                Value::Dict(_, gd) => walk(gd, kd, &path, leaves, errors, fig, origin),
                _ => errors.push(format!("{}: \"{path}\" must be a table", source_of(fig, &path, origin))),
            },
            Some(_) => leaves.push((path, v.clone())),
        }
    }
}

/// Keys that exist but have no default, so they are absent from the serialized defaults.
fn is_optional_key(path: &str) -> bool {
    path == "dkim.key"
}

fn nest(path: &str, value: Value) -> BTreeMap<String, Value> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default().to_string();
    let mut inner = BTreeMap::new();
    inner.insert(last, value);
    while let Some(p) = parts.pop() {
        let mut outer = BTreeMap::new();
        outer.insert(p.to_string(), Value::from(inner));
        inner = outer;
    }
    inner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = load_str(
            "mail_domain = \"x.test\"\ndelete_mails_after = \"3s\"\n[listen]\nsmtp = \"127.0.0.1:2525\"\nimap = []\n",
            "t.toml",
        )
        .expect("valid");
        assert_eq!(c.mail_domain, "x.test");
        assert_eq!(c.delete_mails_after.get().as_secs(), 3);
        assert_eq!(c.listen.smtp.len(), 1);
        assert!(c.listen.imap.is_empty());
        assert_eq!(c.listen.imaps.len(), 1);
        assert_eq!(c.max_mailbox_size.bytes(), 500 * 1024 * 1024);
    }

    #[test]
    fn all_errors_together() {
        let e = load_str(
            "mail_domain = \"x.test\"\nbogus = 1\nmax_message_size = \"12Q\"\n[listen]\nimapz = \"1.2.3.4:1\"\nsmtp = \"nope\"\n",
            "t.toml",
        )
        .expect_err("invalid");
        let text = e.to_string();
        assert!(text.contains("unknown key \"bogus\""), "{text}");
        assert!(text.contains("unknown key \"listen.imapz\""), "{text}");
        assert!(text.contains("max_message_size"), "{text}");
        assert!(text.contains("listen.smtp"), "{text}");
        assert!(text.contains("t.toml"), "{text}");
        assert_eq!(e.errors.len(), 4, "{text}");
    }

    #[test]
    fn invites_on_either_store() {
        // Issue 27: invites live in the shared database on PostgreSQL.
        load_str(
            "mail_domain = \"x.test\"\nregistration = \"invite\"\n[store]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\n",
            "t.toml",
        )
        .expect("invites on a cluster");
        load_str("mail_domain = \"x.test\"\nregistration = \"invite\"\n", "t.toml").expect("invites on SQLite");
    }

    #[test]
    fn missing_domain() {
        let e = load_str("", "t.toml").expect_err("domain required");
        assert!(e.to_string().contains("mail_domain is required"));
    }
}
