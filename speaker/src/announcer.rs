//! The boundary between the decision step and the announcement modes.
//!
//! After every decision ([`crate::engine::decide`]) each mode's announcer is handed the desired
//! state of its mode and converges to it, as MetalLB's protocol controllers do. An announcer
//! owns its I/O (layer2: packet sockets and gratuitous bursts; BGP: sessions) and never waits on
//! the API server: what the cluster is told goes through [`crate::status`], off this path.

/// One announcement mode.
pub trait Announcer {
    /// What the mode is asked to announce (layer2: IP → this host's interfaces).
    type Desired;
    /// One change it made, for the log.
    type Change;

    /// The mode's name, for logs and metrics.
    fn mode(&self) -> &'static str;

    /// Makes the announcements match `desired`; returns what changed.
    fn converge(&mut self, desired: &Self::Desired) -> Vec<Self::Change>;

    /// Announces everything again, unasked, without changing what is announced. Called when
    /// this node's announcements may have been taken over while it could not see it: it was
    /// declared down and rejoined, its own clock jumped (a stall longer than the suspicion
    /// timeout), or a speaker that was cut off came back and may have answered for our IPs.
    fn reassert(&mut self);

    /// Withdraws every announcement (graceful stop).
    fn withdraw_all(&mut self);
}
