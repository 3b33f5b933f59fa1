//! IMAP METADATA values and push tokens (imap.md section 7). Owned by the IMAP work.
