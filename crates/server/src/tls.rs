//! What a connection's TLS layer says about its peer. A placeholder until the TLS listener
//! lands: nothing sets it yet, and authentication already honours it (see
//! `App::authenticate`).

/// The identity a client certificate proves (mutual TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The node the certificate's name binds the connection to.
    pub node: Option<String>,
}
