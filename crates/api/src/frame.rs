//! The framing of Locksmith's binary wire protocol, as pure functions over byte buffers.
//!
//! The wire protocol is a lighter path than HTTP/1.1 for the hot operations (acquire, renew,
//! release, fence check): one TCP connection carries many requests at once (pipelined, answered
//! as they complete, matched by request id), and a frame costs a 14-byte header instead of an
//! HTTP request line and headers. Bodies are the same JSON as the HTTP API's, and so are the
//! errors: an [`ErrorBody`](crate::ErrorBody) with its stable code, under the status HTTP would
//! have answered with.
//!
//! A connection starts with each side sending [`PREAMBLE`]. Then every frame, both ways, is:
//!
//! ```text
//! length  u32 big-endian   bytes after this field (10 + body length), at most MAX_FRAME
//! id      u64 big-endian   chosen by the client; the answer carries the same id
//! code    u16 big-endian   request: the operation (Op); answer: 200 or the error's HTTP status
//! body    JSON             request: AcquireRequest, LeaseOp, FenceCheckRequest, Withdraw or
//!                          Auth; answer: LeaseView, ReleaseResponse, FenceCheckResponse,
//!                          Withdrawn, Authenticated or ErrorBody
//! ```
//!
//! **Authentication.** A server with authentication on (its default) expects [`Op::Auth`] as
//! the first frame after the preamble, carrying the token's secret ([`Auth`]). It answers 200
//! with the [`Authenticated`] principal, after which every request of the connection acts as
//! it; or 401 `unauthenticated` (403 `forbidden` when a client certificate binds the
//! connection to another node), and closes the connection. Any other frame before a
//! successful auth is answered 401 `unauthenticated` and the connection closed. When the
//! token stops working (revoked, expired) the server closes the connection within a second:
//! what is under way is answered (a queued acquire `unauthenticated`, and withdrawn), then a
//! 401 `unauthenticated` under id 0 says why. A second auth frame on an authenticated
//! connection is refused (400 `invalid_request`: one connection, one principal). With
//! `--auth off` no auth frame is needed, and one is answered 200 and changes nothing.
//!
//! Every request gets exactly one answer, except an acquire withdrawn by [`Op::Withdraw`]:
//! the withdraw's answer ([`Withdrawn`]) says whether it was withdrawn (then the acquire gets
//! no answer of its own, and holds nothing) or had already been answered.
//!
//! Request ids start at 1: an error answer under id 0 is about the connection itself — a frame
//! the server could not read (`invalid_request`), or a connection past the server's
//! `--max-connections` (`too_many_connections`, sent right after the preamble) — and the server
//! closes the connection after it.
//!
//! What it is not: I/O. The server's listener and the client's connection read and write these
//! frames; this module only lays them out and takes them apart.

use locksmith_core::{FenceToken, LeaseId};
use serde::{Deserialize, Serialize};

/// What each side sends first: the protocol's name and version, newline-terminated.
pub const PREAMBLE: &[u8; 12] = b"LOCKSMITH/1\n";

/// Bytes of the header: length, id, code.
pub const HEADER_LEN: usize = 4 + 8 + 2;

/// Largest `length` accepted (id + code + a body as large as the HTTP API accepts).
pub const MAX_FRAME: usize = 10 + 64 * 1024;

/// The status of a successful answer.
pub const OK: u16 = 200;

/// A request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// `POST /v1/acquire`: body [`AcquireRequest`](crate::AcquireRequest), answer
    /// [`LeaseView`](crate::LeaseView).
    Acquire = 1,
    /// `POST /v1/leases/{id}/renew`: body [`LeaseOp`], answer [`LeaseView`](crate::LeaseView).
    Renew = 2,
    /// `DELETE /v1/leases/{id}`: body [`LeaseOp`], answer
    /// [`ReleaseResponse`](crate::ReleaseResponse).
    Release = 3,
    /// `POST /v1/fence/check`: body [`FenceCheckRequest`](crate::FenceCheckRequest), answer
    /// [`FenceCheckResponse`](crate::FenceCheckResponse).
    CheckFence = 4,
    /// No HTTP equivalent (there, closing the connection withdraws): withdraws an acquire sent
    /// earlier on the same connection, by its request id. Body [`Withdraw`], answer
    /// [`Withdrawn`].
    Withdraw = 5,
    /// No HTTP equivalent (there, every request carries `Authorization: Bearer`): names the
    /// token the connection's requests act as; the first frame after the preamble. Body
    /// [`Auth`], answer [`Authenticated`] (or 401 and the connection closed).
    Auth = 6,
}

impl Op {
    /// The operation with this code, if any.
    pub fn from_code(code: u16) -> Option<Op> {
        match code {
            1 => Some(Op::Acquire),
            2 => Some(Op::Renew),
            3 => Some(Op::Release),
            4 => Some(Op::CheckFence),
            5 => Some(Op::Withdraw),
            6 => Some(Op::Auth),
            _ => None,
        }
    }
}

/// The body of a renew or release: the lease (in the URL path over HTTP) and, optionally, the
/// fencing token the caller believes it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseOp {
    /// The lease.
    pub lease: LeaseId,
    /// The fencing token the caller believes it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
}

/// The body of [`Op::Withdraw`]: the request id of an acquire sent earlier on this connection,
/// whose caller stopped waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdraw {
    /// The acquire's request id.
    pub request: u64,
}

/// The answer to [`Op::Withdraw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// The acquire's request id.
    pub request: u64,
    /// True: the acquire was still under way and is withdrawn — it left the queue, a grant
    /// that raced with the withdraw was released, and it gets no answer of its own. False: it
    /// had already been answered (or no acquire has that id on this connection).
    pub withdrawn: bool,
}

/// The body of [`Op::Auth`]: the token's secret (`lsm_…`), as HTTP's `Authorization: Bearer`
/// carries it. Its `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The secret.
    pub token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { token: \"…\" }")
    }
}

/// The answer to [`Op::Auth`]: who the connection's requests act as from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticated {
    /// The principal: the token's id, name, role, node and prefixes (`--auth off`: the lab
    /// principal `anonymous`).
    pub principal: crate::Principal,
}

/// One frame, borrowed from the buffer it was read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The request id.
    pub id: u64,
    /// The operation (request) or status (answer).
    pub code: u16,
    /// The JSON body.
    pub body: &'a [u8],
}

/// Why bytes are not a frame. Either way the stream cannot be trusted past this point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// `length` is below the 10 bytes of id and code.
    TooShort(u32),
    /// `length` is above [`MAX_FRAME`].
    TooLong(u32),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "frame length {n} is below the 10-byte minimum"),
            FrameError::TooLong(n) => {
                write!(f, "frame length {n} is above the {MAX_FRAME}-byte maximum")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one frame with a JSON body to `out`.
pub fn encode<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    id: u64,
    code: u16,
    body: &T,
) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    if let Err(e) = serde_json::to_writer(&mut *out, body) {
        out.truncate(start);
        return Err(e);
    }
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Takes the first frame off `buf`: `Ok(None)` if `buf` holds only part of one, else the frame
/// and how many bytes of `buf` it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(len) = buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        return Ok(None);
    };
    if (len as usize) < HEADER_LEN - 4 {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let total = 4 + len as usize;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let mut id = [0; 8];
    id.copy_from_slice(&frame[4..12]);
    let code = u16::from_be_bytes([frame[12], frame[13]]);
    Ok(Some((
        Frame {
            id: u64::from_be_bytes(id),
            code,
            body: &frame[HEADER_LEN..],
        },
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_partial_input_waits_for_more() {
        let mut buf = Vec::new();
        let op = LeaseOp {
            lease: LeaseId(7),
            token: Some(FenceToken(9)),
        };
        encode(&mut buf, 42, Op::Renew as u16, &op).expect("encode");
        encode(&mut buf, 43, OK, &op).expect("encode");
        for cut in 0..HEADER_LEN + 5 {
            assert_eq!(
                decode(&buf[..cut]).expect("valid so far"),
                None,
                "cut at {cut}"
            );
        }
        let (frame, used) = decode(&buf).expect("valid").expect("whole");
        assert_eq!((frame.id, frame.code), (42, 2));
        assert_eq!(
            serde_json::from_slice::<LeaseOp>(frame.body).expect("JSON"),
            op
        );
        let (second, rest) = decode(&buf[used..]).expect("valid").expect("whole");
        assert_eq!((second.id, second.code), (43, OK));
        assert_eq!(used + rest, buf.len());
    }

    #[test]
    fn lengths_outside_the_limits_are_refused_before_reading_the_body() {
        let short = 9u32.to_be_bytes();
        assert_eq!(decode(&short), Err(FrameError::TooShort(9)));
        let long = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(
            decode(&long),
            Err(FrameError::TooLong(MAX_FRAME as u32 + 1))
        );
        // An empty body is a frame (the server answers it with invalid_json).
        let empty = [0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let (frame, used) = decode(&empty).expect("valid").expect("whole");
        assert_eq!(
            (frame.id, frame.code, frame.body.len(), used),
            (1, 1, 0, 14)
        );
    }

    #[test]
    fn every_op_code_maps_back() {
        for op in [
            Op::Acquire,
            Op::Renew,
            Op::Release,
            Op::CheckFence,
            Op::Withdraw,
            Op::Auth,
        ] {
            assert_eq!(Op::from_code(op as u16), Some(op));
        }
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(7), None);
    }

    #[test]
    fn an_auth_body_never_shows_its_secret_in_debug() {
        let auth = Auth {
            token: "lsm_secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
        let json = serde_json::to_string(&auth).expect("JSON");
        assert_eq!(json, r#"{"token":"lsm_secret"}"#);
    }
}
