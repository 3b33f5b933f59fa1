//! The acceptance checks between SMTP/`/mxdeliv` and the store. Filled in by the SMTP issue.
