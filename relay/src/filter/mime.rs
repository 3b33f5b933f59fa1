//! The PGP/MIME shape (FLT-5..FLT-8) on the strict reading: `multipart/encrypted` with exactly
//! two non-multipart subparts, a `Version: 1` control part and an `application/octet-stream`
//! payload.

use std::borrow::Cow;

use super::reading::Entity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("top-level type is not multipart/encrypted")]
    NotEncryptedType,
    #[error("not exactly two non-multipart subparts")]
    Parts,
    #[error("control part is not application/pgp-encrypted with Version: 1")]
    Control,
    #[error("payload part is not application/octet-stream")]
    Payload,
}

/// The payload part's decoded body when the shape is right.
pub fn pgp_payload<'e>(root: &'e Entity<'_>) -> Result<Cow<'e, [u8]>, ShapeError> {
    if !root.is_type("multipart", "encrypted") {
        return Err(ShapeError::NotEncryptedType);
    }
    let [control, payload] = root.parts.as_slice() else {
        return Err(ShapeError::Parts);
    };
    if control.is_multipart() || payload.is_multipart() {
        return Err(ShapeError::Parts);
    }
    let version = control.decoded().map_err(|_| ShapeError::Control)?;
    if !control.is_type("application", "pgp-encrypted") || version.trim_ascii() != b"Version: 1" {
        return Err(ShapeError::Control);
    }
    if !payload.is_type("application", "octet-stream") {
        return Err(ShapeError::Payload);
    }
    payload.decoded().map_err(|_| ShapeError::Payload)
}
