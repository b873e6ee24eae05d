//! Federation trust: each team's policy, invitations, handshake peers with their pinned keys,
//! heartbeats and the per-peer traffic counts.
//!
//! One submodule a concern, their items re-exported here:
//! - `policy`: each team's federation policy (`federation_policies`);
//! - `invitations`: invitations and their single use (`invitations`);
//! - `handshake_peers`: peers recorded by a handshake, with the `send` grant it makes;
//! - `pinned_keys`: the keys pinned for a peer and the rules that keep them its own;
//! - `heartbeats`: the heartbeat state machine and what a peer's answers say of it;
//! - `traffic`: what went between a team and its peers.

mod handshake_peers;
mod heartbeats;
mod invitations;
mod pinned_keys;
mod policy;
mod traffic;

pub use handshake_peers::NewHandshakePeer;
pub use heartbeats::{heartbeat_status, HeartbeatState};
pub use invitations::{InvitationInfo, InvitationRefusal};
pub use pinned_keys::{plan_pins, KeySource, Pin, ENDED_KEPT, MAX_PINNED_ROWS};
pub use policy::Policy;
pub use traffic::Traffic;
