//! `chatrelay accounts ...` (OPS-18, OPS-19, ACC-35, ACC-36): list, inspect, delete and block
//! accounts and set the cleartext permission. State changes go through the control socket of a
//! running `serve` (OPS-15); without one they work directly on the store in `data_dir`.

use std::path::Path;
use std::sync::Arc;

use clap::Subcommand;

use super::{Failure, load_config, runtime};
use crate::accounts::{Accounts, Secret};
use crate::config::ConfigHandle;
use crate::control::Request;
use crate::metrics::Metrics;
use crate::store::{Account, DeleteReason, Store};

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    /// One line per account: address, created, last login, messages, bytes, flags.
    List,
    /// One account in detail, with push-token count and mailboxes.
    Show { address: String },
    /// Delete an account and all its data now; the address can never be used again.
    Delete { address: String },
    /// Refuse logins and incoming mail; data stays until retention removes it. An address without
    /// an account is tombstoned so it cannot be created.
    Block { address: String },
    /// Accept unencrypted incoming mail for this account (filter.md FLT-25).
    AllowCleartext { address: String },
    /// Refuse unencrypted incoming mail for this account again.
    DenyCleartext { address: String },
}

/// A day number (days since 1970-01-01) as YYYY-MM-DD.
pub(super) fn day(d: i64) -> String {
    let (y, m, dd) = crate::civil::from_days(d);
    format!("{y:04}-{m:02}-{dd:02}")
}

fn line(a: &Account, messages: u64) -> String {
    let mut flags = Vec::new();
    if a.blocked {
        flags.push("blocked");
    }
    if a.cleartext {
        flags.push("cleartext");
    }
    format!(
        "{}\tcreated={}\tlast_login={}\tmessages={}\tbytes={}\tflags={}",
        a.address,
        day(a.created_day),
        day(a.last_login_day),
        messages,
        a.usage_bytes,
        if flags.is_empty() { "-".to_string() } else { flags.join(",") }
    )
}

pub fn run(config: &Path, cmd: AccountsCmd) -> Result<(), Failure> {
    let cfg = load_config(config)?;
    // OPS-15: a running serve applies the change itself so live sessions are told at once.
    if let Some(change) = Change::of(&cmd)
        && let Some(reply) = crate::control::request(&cfg.data_dir, &change.request())
    {
        if !reply.ok {
            return Err(Failure::Runtime(reply.message));
        }
        println!("{}", reply.message);
        return Ok(());
    }
    if !cfg.data_dir.join("chatrelay.db").exists() {
        return Err(Failure::Runtime(format!(
            "no database in {} (run `chatrelay init` or `serve` first)",
            cfg.data_dir.display()
        )));
    }
    runtime()?.block_on(async move {
        let store = Store::open_config(&cfg).map_err(Failure::runtime)?;
        let secret = Secret::load_or_create(&cfg.data_dir).map_err(Failure::runtime)?;
        let accounts = Accounts::new(store.clone(), ConfigHandle::new(cfg), secret, Metrics::new());
        exec(&store, &accounts, cmd).await
    })
}

/// The account of `address`, or a runtime failure saying why there is none.
async fn find(store: &Store, accounts: &Arc<Accounts>, address: &str) -> Result<Account, Failure> {
    let addr = address.trim().to_lowercase();
    if let Some(a) = store.account_by_address(&addr).await.map_err(Failure::runtime)? {
        return Ok(a);
    }
    let gone = store.is_tombstoned(accounts.secret().tombstone(&addr)).await.map_err(Failure::runtime)?;
    Err(Failure::Runtime(if gone {
        format!("no account {addr}: the address is deleted (tombstoned) and cannot be used again")
    } else {
        format!("no account {addr}")
    }))
}

async fn message_count(store: &Store, a: &Account) -> Result<(u64, Vec<(String, u64)>), Failure> {
    let mut total = 0;
    let mut boxes = Vec::new();
    for mb in store.list_mailboxes(a.id).await.map_err(Failure::runtime)? {
        let n = store.messages(mb.id).await.map_err(Failure::runtime)?.len() as u64;
        total += n;
        boxes.push((mb.name, n));
    }
    Ok((total, boxes))
}

async fn exec(store: &Store, accounts: &Arc<Accounts>, cmd: AccountsCmd) -> Result<(), Failure> {
    match cmd {
        AccountsCmd::List => {
            for (a, n) in store.list_accounts().await.map_err(Failure::runtime)? {
                println!("{}", line(&a, n));
            }
        }
        AccountsCmd::Show { address } => {
            let a = find(store, accounts, &address).await?;
            let (n, boxes) = message_count(store, &a).await?;
            let tokens = store.push_tokens(a.id).await.map_err(Failure::runtime)?.len();
            println!("{}", line(&a, n));
            println!("push_tokens={tokens}");
            for (name, count) in boxes {
                println!("mailbox\t{name}\tmessages={count}");
            }
        }
        AccountsCmd::Delete { address } => {
            println!("{}", apply_change(store, accounts, Change::Delete(address)).await?)
        }
        AccountsCmd::Block { address } => println!("{}", apply_change(store, accounts, Change::Block(address)).await?),
        AccountsCmd::AllowCleartext { address } => {
            println!("{}", apply_change(store, accounts, Change::AllowCleartext(address)).await?)
        }
        AccountsCmd::DenyCleartext { address } => {
            println!("{}", apply_change(store, accounts, Change::DenyCleartext(address)).await?)
        }
    }
    Ok(())
}

/// A state-changing account command, run here or inside `serve` through the control socket.
#[derive(Debug, Clone)]
pub enum Change {
    Delete(String),
    Block(String),
    AllowCleartext(String),
    DenyCleartext(String),
}

impl Change {
    fn of(cmd: &AccountsCmd) -> Option<Self> {
        Some(match cmd {
            AccountsCmd::Delete { address } => Self::Delete(address.clone()),
            AccountsCmd::Block { address } => Self::Block(address.clone()),
            AccountsCmd::AllowCleartext { address } => Self::AllowCleartext(address.clone()),
            AccountsCmd::DenyCleartext { address } => Self::DenyCleartext(address.clone()),
            AccountsCmd::List | AccountsCmd::Show { .. } => return None,
        })
    }

    fn request(&self) -> Request {
        match self.clone() {
            Self::Delete(address) => Request::AccountDelete { address },
            Self::Block(address) => Request::AccountBlock { address },
            Self::AllowCleartext(address) => Request::AccountAllowCleartext { address },
            Self::DenyCleartext(address) => Request::AccountDenyCleartext { address },
        }
    }
}

/// Apply `change`; returns the line to print. Inside `serve` (control socket) `accounts` is the
/// live one, so a deletion or block reaches open sessions at once (ACC-28).
pub async fn apply_change(store: &Store, accounts: &Arc<Accounts>, change: Change) -> Result<String, Failure> {
    Ok(match change {
        Change::Delete(address) => {
            let a = find(store, accounts, &address).await?;
            accounts.delete(&a, DeleteReason::Admin).await.map_err(Failure::runtime)?;
            format!("deleted {}", a.address)
        }
        Change::Block(address) => {
            let addr = address.trim().to_lowercase();
            match store.account_by_address(&addr).await.map_err(Failure::runtime)? {
                Some(a) => {
                    accounts.block(&a).await.map_err(Failure::runtime)?;
                    format!("blocked {addr}")
                }
                None => {
                    // ACC-36: a blocked address can never be created; without data, a tombstone says so.
                    store.add_tombstone(accounts.secret().tombstone(&addr)).await.map_err(Failure::runtime)?;
                    format!("blocked {addr} (no account; the address is tombstoned)")
                }
            }
        }
        Change::AllowCleartext(address) => {
            let a = find(store, accounts, &address).await?;
            store.set_cleartext(a.id, true).await.map_err(Failure::runtime)?;
            format!("cleartext allowed for {}", a.address)
        }
        Change::DenyCleartext(address) => {
            let a = find(store, accounts, &address).await?;
            store.set_cleartext(a.id, false).await.map_err(Failure::runtime)?;
            format!("cleartext denied for {}", a.address)
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn days() {
        assert_eq!(super::day(0), "1970-01-01");
        assert_eq!(super::day(20_000), "2024-10-04");
    }
}
