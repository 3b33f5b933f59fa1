//! The PGP/MIME shape (FLT-5..FLT-8): `multipart/encrypted` with exactly two non-multipart
//! subparts, a `Version: 1` control part and an `application/octet-stream` payload.

use mail_parser::{Message, MessagePart, MimeHeaders};

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

/// `type/subtype` of a part, compared case-insensitively; None without a Content-Type.
pub fn is_type(part: &MessagePart<'_>, ty: &str, sub: &str) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ty) && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case(sub))
    })
}

/// The subparts of the root when it is multipart.
pub fn root_children<'m, 'x>(msg: &'m Message<'x>) -> Option<Vec<&'m MessagePart<'x>>> {
    let ids = msg.root_part().sub_parts()?;
    ids.iter().map(|&id| msg.part(id)).collect()
}

/// Return the payload part's decoded body when the shape is right.
pub fn pgp_payload<'m>(msg: &'m Message<'_>) -> Result<&'m [u8], ShapeError> {
    let root = msg.root_part();
    if !is_type(root, "multipart", "encrypted") {
        return Err(ShapeError::NotEncryptedType);
    }
    let children = root_children(msg).ok_or(ShapeError::Parts)?;
    let [control, payload] = children.as_slice() else {
        return Err(ShapeError::Parts);
    };
    if control.is_multipart() || payload.is_multipart() {
        return Err(ShapeError::Parts);
    }
    if !is_type(control, "application", "pgp-encrypted") || control.contents().trim_ascii() != b"Version: 1" {
        return Err(ShapeError::Control);
    }
    if !is_type(payload, "application", "octet-stream") {
        return Err(ShapeError::Payload);
    }
    Ok(payload.contents())
}
